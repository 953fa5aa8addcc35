"""The one list of boundary record lengths every stream test uses: 0..33 covers the bus width
(8 bytes: 7/8/9), the xxh32 16-byte and xxh64 32-byte stripes (15/16/17, 31/32/33); then a few
multi-stripe and large records."""

BUS_BYTES = 8
BOUNDARY_LENGTHS = list(range(0, 34)) + [BUS_BYTES * 8 - 1, BUS_BYTES * 8, BUS_BYTES * 8 + 1,
                                         127, 128, 129, 1000]
