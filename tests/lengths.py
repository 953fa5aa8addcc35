"""Record lengths every stream test uses: 0..33 (every tail shape of XXH32/XXH64, one and two
stripes), the 64-bit bus width and the XXH64 stripe +-1 at 64 and 128 bytes, and one long one."""

BOUNDARY_LENGTHS = list(range(0, 34)) + [63, 64, 65, 127, 128, 129, 1000]
