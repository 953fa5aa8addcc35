"""Generate sim/offload_engine.hwh: the PYNQ-Z2 block design (PS7 + axi_dma + offload_axi) that
rtl/package_ip.tcl builds, with the same instance names and addresses, for the simulated PYNQ
device. Run `python -m offload.sim.make_hwh` after changing the register map or the Tcl script;
tests/test_fpga_hwh.py fails when the checked-in file drifts from this generator.
"""

from pathlib import Path

from offload.engine_map import REGISTERS

ENGINE_BASE, ENGINE_HIGH = 0x43C00000, 0x43C00FFF
DMA_BASE, DMA_HIGH = 0x40400000, 0x4040FFFF
CLK = "ps7_FCLK_CLK0"
RSTN = "rst_ps7_100M_peripheral_aresetn"


def P(name, value):
    return f'        <PARAMETER NAME="{name}" VALUE="{value}"/>'


#: the interconnects' side of every port connected to them: (port, dir, signal, owner, name, left, sigis)
REFS: dict[str, list[tuple[str, str, str, str, str, int | None, str]]] = {}
#: the instance whose ports are being written (set before each block below)
OWNER: list[str | None] = [None]


def port(name, d, sig, conns, left=None, sigis="undef", extra=""):
    for i, p in conns:
        if i in ("ps7_axi_periph", "axi_mem_intercon") and OWNER[0] is not None:
            REFS.setdefault(i, []).append((p, "O" if d == "I" else "I", sig, OWNER[0], name, left, sigis))
    lr = f' LEFT="{left}" RIGHT="0"' if left is not None else ""
    c = "".join(f'\n            <CONNECTION INSTANCE="{i}" PORT="{p}"/>' for i, p in conns)
    return (
        f'        <PORT{extra} DIR="{d}"{lr} NAME="{name}" SIGIS="{sigis}" SIGNAME="{sig}">\n'
        f"          <CONNECTIONS>{c}\n          </CONNECTIONS>\n        </PORT>"
    )


AXIL = [
    ("AWADDR", "I", 6),
    ("AWVALID", "I", None),
    ("AWREADY", "O", None),
    ("WDATA", "I", 31),
    ("WSTRB", "I", 3),
    ("WVALID", "I", None),
    ("WREADY", "O", None),
    ("BRESP", "O", 1),
    ("BVALID", "O", None),
    ("BREADY", "I", None),
    ("ARADDR", "I", 6),
    ("ARVALID", "I", None),
    ("ARREADY", "O", None),
    ("RDATA", "O", 31),
    ("RRESP", "O", 1),
    ("RVALID", "O", None),
    ("RREADY", "I", None),
]
AXIS = [("TDATA", 63), ("TKEEP", 7), ("TLAST", None), ("TVALID", None), ("TREADY", None)]


def axil_ports(prefix, inst, busname, awidth, lower=False):
    out = []
    for sig, d, left in AXIL:
        if sig in ("AWADDR", "ARADDR"):
            left = awidth - 1
        nm = prefix + (sig.lower() if lower else sig)
        out.append(
            port(
                nm,
                d,
                f"{busname}_{sig.lower()}",
                [(inst, f"{busname.split('_', 2)[-1]}_{sig.lower()}")],
                left,
            )
        )
    return out


def portmaps(prefix, sigs, lower=False):
    return "\n".join(
        f'            <PORTMAP LOGICAL="{s}" PHYSICAL="{prefix}{s.lower() if lower else s}"/>' for s in sigs
    )


def busif(name, typ, vlnv, busname, sigs, prefix, params=(), lower=False, datawidth=None):
    dw = f' DATAWIDTH="{datawidth}"' if datawidth else ""
    ps = "\n".join("  " + P(k, v) for k, v in params)
    return (
        f'        <BUSINTERFACE BUSNAME="{busname}"{dw} NAME="{name}" TYPE="{typ}" VLNV="{vlnv}">\n'
        f"{ps}\n          <PORTMAPS>\n{portmaps(prefix, sigs, lower)}\n          </PORTMAPS>\n"
        f"        </BUSINTERFACE>"
    )


AXIL_SIGS = [s for s, _, _ in AXIL]
AXIS_SIGS = [s for s, _ in AXIS]
AXI_MM_SIGS = [
    "ARADDR",
    "ARBURST",
    "ARCACHE",
    "ARLEN",
    "ARPROT",
    "ARREADY",
    "ARSIZE",
    "ARVALID",
    "RDATA",
    "RLAST",
    "RREADY",
    "RRESP",
    "RVALID",
]
AXI_S2MM_SIGS = [
    "AWADDR",
    "AWBURST",
    "AWCACHE",
    "AWLEN",
    "AWPROT",
    "AWREADY",
    "AWSIZE",
    "AWVALID",
    "BREADY",
    "BRESP",
    "BVALID",
    "WDATA",
    "WLAST",
    "WREADY",
    "WSTRB",
    "WVALID",
]


def registers():
    out = []
    for name, off in REGISTERS.items():
        acc = (
            "write-only"
            if name in ("CTRL", "TABLE_DATA_LO", "TABLE_DATA_HI")
            else "read-only"
            if name
            in (
                "ID",
                "VERSION",
                "STATUS",
                "ERR",
                "DONE_COUNT",
                "CAPS",
                "CYCLES_LO",
                "CYCLES_HI",
                "OPS",
                "OPS_HI",
                "SEQ_MAX",
                "RECORD_MAX",
            )
            else "read-write"
        )
        out.append(f'''            <REGISTER NAME="{name}">
              <PROPERTY NAME="DESCRIPTION" VALUE="{name} (docs/wire_format.md)"/>
              <PROPERTY NAME="ADDRESS_OFFSET" VALUE="0x{off:x}"/>
              <PROPERTY NAME="SIZE" VALUE="32"/>
              <PROPERTY NAME="ACCESS" VALUE="{acc}"/>
              <PROPERTY NAME="IS_ENABLED" VALUE="true"/>
              <PROPERTY NAME="RESET_VALUE" VALUE="0x0"/>
              <FIELDS>
                <FIELD NAME="{name}">
                  <PROPERTY NAME="DESCRIPTION" VALUE="{name}"/>
                  <PROPERTY NAME="ADDRESS_OFFSET" VALUE="0"/>
                  <PROPERTY NAME="ACCESS" VALUE="{acc}"/>
                  <PROPERTY NAME="BIT_OFFSET" VALUE="0"/>
                  <PROPERTY NAME="BIT_WIDTH" VALUE="32"/>
                </FIELD>
              </FIELDS>
            </REGISTER>''')
    return "\n".join(out)


ps7_params = {
    "C_FCLK_CLK0_FREQ": "100000000",
    "C_FCLK_CLK1_FREQ": "10000000",
    "C_FCLK_CLK2_FREQ": "10000000",
    "C_FCLK_CLK3_FREQ": "10000000",
    "C_M_AXI_GP0_ENABLE_STATIC_REMAP": "0",
    "C_PACKAGE_NAME": "clg400",
    "C_S_AXI_HP0_DATA_WIDTH": "64",
    "C_USE_M_AXI_GP0": "1",
    "C_USE_S_AXI_HP0": "1",
    "C_NUM_F2P_INTR_INPUTS": "1",
    "C_IRQ_F2P_MODE": "DIRECT",
    "PCW_UIPARAM_DDR_PARTNO": "MT41K256M16 RE-125",
    "PCW_UIPARAM_ACT_DDR_FREQ_MHZ": "525.000000",
    "PCW_CRYSTAL_PERIPHERAL_FREQMHZ": "50",
    "PCW_APU_PERIPHERAL_FREQMHZ": "650",
    "PCW_USE_M_AXI_GP0": "1",
    "PCW_USE_S_AXI_HP0": "1",
    "PCW_S_AXI_HP0_DATA_WIDTH": "64",
    "PCW_S_AXI_HP0_FREQMHZ": "100",
    "PCW_USE_FABRIC_INTERRUPT": "0",
    "PCW_DDR_RAM_BASEADDR": "0x00100000",
    "PCW_DDR_RAM_HIGHADDR": "0x1FFFFFFF",
}
for i in range(4):
    on = i == 0
    ps7_params.update(
        {
            f"PCW_FPGA{i}_PERIPHERAL_FREQMHZ": "100" if on else "50",
            f"PCW_ACT_FPGA{i}_PERIPHERAL_FREQMHZ": "100.000000" if on else "10.000000",
            f"PCW_CLK{i}_FREQ": "100000000" if on else "10000000",
            f"PCW_FCLK{i}_PERIPHERAL_DIVISOR0": "5" if on else "1",
            f"PCW_FCLK{i}_PERIPHERAL_DIVISOR1": "2" if on else "1",
            f"PCW_FCLK{i}_PERIPHERAL_CLKSRC": "IO PLL",
            f"PSU__CRL_APB__PL{i}_REF_CTRL__ACT_FREQMHZ": "100.000000" if on else "10.000000",
            f"PCW_FPGA_FCLK{i}_ENABLE": "1" if on else "0",
            f"PCW_EN_CLK{i}_PORT": "1" if on else "0",
            f"PCW_FCLK_CLK{i}_BUF": "TRUE" if on else "FALSE",
        }
    )

dma_params = {
    "C_S_AXI_LITE_ADDR_WIDTH": "10",
    "C_S_AXI_LITE_DATA_WIDTH": "32",
    "C_DLYTMR_RESOLUTION": "125",
    "C_PRMRY_IS_ACLK_ASYNC": "0",
    "C_ENABLE_MULTI_CHANNEL": "0",
    "C_NUM_MM2S_CHANNELS": "1",
    "C_NUM_S2MM_CHANNELS": "1",
    "C_INCLUDE_SG": "0",
    "C_SG_INCLUDE_STSCNTRL_STRM": "0",
    "C_SG_USE_STSAPP_LENGTH": "0",
    "C_SG_LENGTH_WIDTH": "23",
    "C_M_AXI_SG_ADDR_WIDTH": "32",
    "C_M_AXI_SG_DATA_WIDTH": "32",
    "C_INCLUDE_MM2S": "1",
    "C_INCLUDE_MM2S_SF": "1",
    "C_INCLUDE_MM2S_DRE": "0",
    "C_M_AXI_MM2S_ADDR_WIDTH": "32",
    "C_M_AXI_MM2S_DATA_WIDTH": "32",
    "C_M_AXIS_MM2S_TDATA_WIDTH": "64",
    "C_MM2S_BURST_SIZE": "64",
    "C_INCLUDE_S2MM": "1",
    "C_INCLUDE_S2MM_SF": "1",
    "C_INCLUDE_S2MM_DRE": "0",
    "C_M_AXI_S2MM_ADDR_WIDTH": "32",
    "C_M_AXI_S2MM_DATA_WIDTH": "32",
    "C_S_AXIS_S2MM_TDATA_WIDTH": "64",
    "C_S2MM_BURST_SIZE": "64",
    "C_MICRO_DMA": "0",
    "C_ADDR_WIDTH": "32",
    "C_FAMILY": "zynq",
    "Component_Name": "design_1_dma_0",
    "EDK_IPTYPE": "PERIPHERAL",
    "C_BASEADDR": f"0x{DMA_BASE:08X}",
    "C_HIGHADDR": f"0x{DMA_HIGH:08X}",
}
for _k in [
    "C_INCLUDE_SG",
    "C_ENABLE_MULTI_CHANNEL",
    "C_NUM_MM2S_CHANNELS",
    "C_NUM_S2MM_CHANNELS",
    "C_SG_LENGTH_WIDTH",
    "C_DLYTMR_RESOLUTION",
    "C_PRMRY_IS_ACLK_ASYNC",
    "C_SG_INCLUDE_STSCNTRL_STRM",
    "C_MICRO_DMA",
    "C_INCLUDE_MM2S",
    "C_M_AXI_MM2S_DATA_WIDTH",
    "C_M_AXIS_MM2S_TDATA_WIDTH",
    "C_INCLUDE_MM2S_DRE",
    "C_INCLUDE_MM2S_SF",
    "C_MM2S_BURST_SIZE",
    "C_INCLUDE_S2MM",
    "C_SG_USE_STSAPP_LENGTH",
    "C_M_AXI_S2MM_DATA_WIDTH",
    "C_S_AXIS_S2MM_TDATA_WIDTH",
    "C_INCLUDE_S2MM_DRE",
    "C_INCLUDE_S2MM_SF",
    "C_S2MM_BURST_SIZE",
    "C_ADDR_WIDTH",
]:
    dma_params[_k.lower()] = dma_params[_k]
dma_params["c_single_interface"] = "0"
dma_params["c_increase_throughput"] = "0"
eng_params = {
    "C_S_AXI_ADDR_WIDTH": "12",
    "C_S_AXI_DATA_WIDTH": "32",
    "BUS_BYTES": "8",
    "TABLE_DEPTH": "256",
    "Component_Name": "design_1_offload_0",
    "EDK_IPTYPE": "PERIPHERAL",
    "C_S_AXI_BASEADDR": f"0x{ENGINE_BASE:08X}",
    "C_S_AXI_HIGHADDR": f"0x{ENGINE_HIGH:08X}",
}


def params(d):
    return "      <PARAMETERS>\n" + "\n".join("  " + P(k, v) for k, v in d.items()) + "\n      </PARAMETERS>"


CLKPORT = lambda name: port(
    name, "I", CLK, [("ps7", "FCLK_CLK0")], sigis="clk", extra=' CLKFREQUENCY="100000000"'
)
RSTPORT = lambda name: port(name, "I", RSTN, [("rst_ps7_100M", "peripheral_aresetn")], sigis="rst")

OWNER[0] = "offload"
# --- engine -----------------------------------------------------------------------------------
eng_ports = [CLKPORT("aclk"), RSTPORT("aresetn")]
for sig, d, left in AXIL:
    if sig in ("AWADDR", "ARADDR"):
        left = 11
    eng_ports.append(
        port(
            f"s_axi_{sig.lower()}",
            d,
            f"ps7_axi_periph_M01_AXI_{sig.lower()}",
            [("ps7_axi_periph", f"M01_AXI_{sig.lower()}")],
            left,
        )
    )
for sig, left in AXIS:
    d_in = "O" if sig == "TREADY" else "I"
    eng_ports.append(
        port(
            f"s_axis_{sig.lower()}",
            d_in,
            f"dma_M_AXIS_MM2S_{sig}",
            [("dma", f"m_axis_mm2s_{sig.lower()}")],
            left,
        )
    )
for sig, left in AXIS:
    d_out = "I" if sig == "TREADY" else "O"
    eng_ports.append(
        port(
            f"m_axis_{sig.lower()}",
            d_out,
            f"offload_m_axis_{sig}",
            [("dma", f"s_axis_s2mm_{sig.lower()}")],
            left,
        )
    )
eng_bus = [
    busif(
        "s_axi",
        "SLAVE",
        "xilinx.com:interface:aximm:1.0",
        "ps7_axi_periph_M01_AXI",
        AXIL_SIGS,
        "s_axi_",
        [("PROTOCOL", "AXI4LITE"), ("DATA_WIDTH", "32"), ("ADDR_WIDTH", "12"), ("FREQ_HZ", "100000000")],
        lower=True,
        datawidth=32,
    ),
    busif(
        "s_axis",
        "SLAVE",
        "xilinx.com:interface:axis:1.0",
        "dma_M_AXIS_MM2S",
        AXIS_SIGS,
        "s_axis_",
        [("TDATA_NUM_BYTES", "8"), ("HAS_TLAST", "1"), ("HAS_TKEEP", "1"), ("FREQ_HZ", "100000000")],
        lower=True,
    ),
    busif(
        "m_axis",
        "MASTER",
        "xilinx.com:interface:axis:1.0",
        "offload_m_axis",
        AXIS_SIGS,
        "m_axis_",
        [("TDATA_NUM_BYTES", "8"), ("HAS_TLAST", "1"), ("HAS_TKEEP", "1"), ("FREQ_HZ", "100000000")],
        lower=True,
    ),
]
engine = f"""    <MODULE COREREVISION="1" FULLNAME="/offload" HWVERSION="1.0" INSTANCE="offload" IPTYPE="PERIPHERAL" IS_ENABLE="1" MODCLASS="PERIPHERAL" MODTYPE="offload_axi" VLNV="offload.dev:user:offload_axi:1.0">
      <DOCUMENTS/>
      <ADDRESSBLOCKS>
        <ADDRESSBLOCK ACCESS="read-write" INTERFACE="s_axi" NAME="reg0" RANGE="4096" USAGE="register">
          <REGISTERS>
{registers()}
          </REGISTERS>
        </ADDRESSBLOCK>
      </ADDRESSBLOCKS>
{params(eng_params)}
      <PORTS>
{chr(10).join(eng_ports)}
      </PORTS>
      <BUSINTERFACES>
{chr(10).join(eng_bus)}
      </BUSINTERFACES>
    </MODULE>"""

OWNER[0] = "dma"
# --- DMA --------------------------------------------------------------------------------------
dma_ports = [
    CLKPORT("s_axi_lite_aclk"),
    CLKPORT("m_axi_mm2s_aclk"),
    CLKPORT("m_axi_s2mm_aclk"),
    RSTPORT("axi_resetn"),
]
for sig, d, left in AXIL:
    if sig in ("AWADDR", "ARADDR"):
        left = 9
    dma_ports.append(
        port(
            f"s_axi_lite_{sig.lower()}",
            d,
            f"ps7_axi_periph_M00_AXI_{sig.lower()}",
            [("ps7_axi_periph", f"M00_AXI_{sig.lower()}")],
            left,
        )
    )
for sig in AXI_MM_SIGS:
    d = "I" if sig in ("ARREADY", "RDATA", "RLAST", "RRESP", "RVALID") else "O"
    left = {
        "ARADDR": 31,
        "ARBURST": 1,
        "ARCACHE": 3,
        "ARLEN": 7,
        "ARPROT": 2,
        "ARSIZE": 2,
        "RDATA": 63,
        "RRESP": 1,
    }.get(sig)
    dma_ports.append(
        port(
            f"m_axi_mm2s_{sig.lower()}",
            d,
            f"dma_M_AXI_MM2S_{sig}",
            [("axi_mem_intercon", f"S00_AXI_{sig.lower()}")],
            left,
        )
    )
for sig in AXI_S2MM_SIGS:
    d = "I" if sig in ("AWREADY", "BRESP", "BVALID", "WREADY") else "O"
    left = {
        "AWADDR": 31,
        "AWBURST": 1,
        "AWCACHE": 3,
        "AWLEN": 7,
        "AWPROT": 2,
        "AWSIZE": 2,
        "BRESP": 1,
        "WDATA": 63,
        "WSTRB": 7,
    }.get(sig)
    dma_ports.append(
        port(
            f"m_axi_s2mm_{sig.lower()}",
            d,
            f"dma_M_AXI_S2MM_{sig}",
            [("axi_mem_intercon", f"S01_AXI_{sig.lower()}")],
            left,
        )
    )
for sig, left in AXIS:
    d = "I" if sig == "TREADY" else "O"
    dma_ports.append(
        port(
            f"m_axis_mm2s_{sig.lower()}",
            d,
            f"dma_M_AXIS_MM2S_{sig}",
            [("offload", f"s_axis_{sig.lower()}")],
            left,
        )
    )
for sig, left in AXIS:
    d = "O" if sig == "TREADY" else "I"
    dma_ports.append(
        port(
            f"s_axis_s2mm_{sig.lower()}",
            d,
            f"offload_m_axis_{sig}",
            [("offload", f"m_axis_{sig.lower()}")],
            left,
        )
    )
dma_ports.append('        <PORT DIR="O" NAME="mm2s_introut" SENSITIVITY="LEVEL_HIGH" SIGIS="INTERRUPT"/>')
dma_ports.append('        <PORT DIR="O" NAME="s2mm_introut" SENSITIVITY="LEVEL_HIGH" SIGIS="INTERRUPT"/>')
dma_bus = [
    busif(
        "S_AXI_LITE",
        "SLAVE",
        "xilinx.com:interface:aximm:1.0",
        "ps7_axi_periph_M00_AXI",
        AXIL_SIGS,
        "s_axi_lite_",
        [("PROTOCOL", "AXI4LITE"), ("DATA_WIDTH", "32"), ("ADDR_WIDTH", "10"), ("FREQ_HZ", "100000000")],
        lower=True,
        datawidth=32,
    ),
    busif(
        "M_AXI_MM2S",
        "MASTER",
        "xilinx.com:interface:aximm:1.0",
        "dma_M_AXI_MM2S",
        AXI_MM_SIGS,
        "m_axi_mm2s_",
        [("PROTOCOL", "AXI4"), ("DATA_WIDTH", "32"), ("ADDR_WIDTH", "32"), ("READ_WRITE_MODE", "READ_ONLY")],
        lower=True,
        datawidth=32,
    ),
    busif(
        "M_AXI_S2MM",
        "MASTER",
        "xilinx.com:interface:aximm:1.0",
        "dma_M_AXI_S2MM",
        AXI_S2MM_SIGS,
        "m_axi_s2mm_",
        [("PROTOCOL", "AXI4"), ("DATA_WIDTH", "64"), ("ADDR_WIDTH", "32"), ("READ_WRITE_MODE", "WRITE_ONLY")],
        lower=True,
        datawidth=64,
    ),
    busif(
        "M_AXIS_MM2S",
        "MASTER",
        "xilinx.com:interface:axis:1.0",
        "dma_M_AXIS_MM2S",
        AXIS_SIGS,
        "m_axis_mm2s_",
        [("TDATA_NUM_BYTES", "8"), ("HAS_TLAST", "1"), ("HAS_TKEEP", "1")],
        lower=True,
    ),
    busif(
        "S_AXIS_S2MM",
        "SLAVE",
        "xilinx.com:interface:axis:1.0",
        "offload_m_axis",
        AXIS_SIGS,
        "s_axis_s2mm_",
        [("TDATA_NUM_BYTES", "8"), ("HAS_TLAST", "1"), ("HAS_TKEEP", "1")],
        lower=True,
    ),
]
dma = f"""    <MODULE COREREVISION="21" FULLNAME="/dma" HWVERSION="7.1" INSTANCE="dma" IPTYPE="PERIPHERAL" IS_ENABLE="1" MODCLASS="PERIPHERAL" MODTYPE="axi_dma" VLNV="xilinx.com:ip:axi_dma:7.1">
      <DOCUMENTS>
        <DOCUMENT SOURCE="http://www.xilinx.com/cgi-bin/docs/ipdoc?c=axi_dma;v=v7_1;d=pg021_axi_dma.pdf"/>
      </DOCUMENTS>
      <ADDRESSBLOCKS>
        <ADDRESSBLOCK ACCESS="read-write" INTERFACE="S_AXI_LITE" NAME="Reg" RANGE="65536" USAGE="register"/>
      </ADDRESSBLOCKS>
{params(dma_params)}
      <PORTS>
{chr(10).join(dma_ports)}
      </PORTS>
      <BUSINTERFACES>
{chr(10).join(dma_bus)}
      </BUSINTERFACES>
      <MEMORYMAP>
        <MEMRANGE ADDRESSBLOCK="HP0_DDR_LOWOCM" BASENAME="C_BASEADDR" BASEVALUE="0x00000000" HIGHNAME="C_HIGHADDR" HIGHVALUE="0x1FFFFFFF" INSTANCE="ps7" IS_DATA="TRUE" IS_INSTRUCTION="FALSE" MASTERBUSINTERFACE="M_AXI_MM2S" MEMTYPE="MEMORY" SLAVEBUSINTERFACE="S_AXI_HP0"/>
        <MEMRANGE ADDRESSBLOCK="HP0_DDR_LOWOCM" BASENAME="C_BASEADDR" BASEVALUE="0x00000000" HIGHNAME="C_HIGHADDR" HIGHVALUE="0x1FFFFFFF" INSTANCE="ps7" IS_DATA="TRUE" IS_INSTRUCTION="FALSE" MASTERBUSINTERFACE="M_AXI_S2MM" MEMTYPE="MEMORY" SLAVEBUSINTERFACE="S_AXI_HP0"/>
      </MEMORYMAP>
      <PERIPHERALS>
        <PERIPHERAL INSTANCE="ps7"/>
      </PERIPHERALS>
    </MODULE>"""

OWNER[0] = "ps7"
# --- PS7 --------------------------------------------------------------------------------------
ps_ports = [
    port(
        "FCLK_CLK0",
        "O",
        CLK,
        [
            ("dma", "s_axi_lite_aclk"),
            ("dma", "m_axi_mm2s_aclk"),
            ("dma", "m_axi_s2mm_aclk"),
            ("offload", "aclk"),
            ("ps7_axi_periph", "ACLK"),
            ("axi_mem_intercon", "ACLK"),
            ("rst_ps7_100M", "slowest_sync_clk"),
            ("ps7", "M_AXI_GP0_ACLK"),
            ("ps7", "S_AXI_HP0_ACLK"),
        ],
        sigis="clk",
        extra=' CLKFREQUENCY="100000000"',
    ),
    port("FCLK_RESET0_N", "O", "ps7_FCLK_RESET0_N", [("rst_ps7_100M", "ext_reset_in")], sigis="rst"),
    port("M_AXI_GP0_ACLK", "I", CLK, [("ps7", "FCLK_CLK0")], sigis="clk", extra=' CLKFREQUENCY="100000000"'),
    port("S_AXI_HP0_ACLK", "I", CLK, [("ps7", "FCLK_CLK0")], sigis="clk", extra=' CLKFREQUENCY="100000000"'),
]
GP0_SIGS = [
    "ARVALID",
    "AWVALID",
    "BREADY",
    "RREADY",
    "WLAST",
    "WVALID",
    "ARID",
    "AWID",
    "WID",
    "ARBURST",
    "ARLOCK",
    "ARSIZE",
    "AWBURST",
    "AWLOCK",
    "AWSIZE",
    "ARPROT",
    "AWPROT",
    "ARADDR",
    "AWADDR",
    "WDATA",
    "ARCACHE",
    "ARLEN",
    "ARQOS",
    "AWCACHE",
    "AWLEN",
    "AWQOS",
    "WSTRB",
    "ARREADY",
    "AWREADY",
    "BVALID",
    "RLAST",
    "RVALID",
    "WREADY",
    "BID",
    "RID",
    "BRESP",
    "RRESP",
    "RDATA",
]
GP0_IN = {
    "ARREADY",
    "AWREADY",
    "BVALID",
    "RLAST",
    "RVALID",
    "WREADY",
    "BID",
    "RID",
    "BRESP",
    "RRESP",
    "RDATA",
}
for s in GP0_SIGS:
    ps_ports.append(
        port(
            f"M_AXI_GP0_{s}",
            "I" if s in GP0_IN else "O",
            f"ps7_M_AXI_GP0_{s}",
            [("ps7_axi_periph", f"S00_AXI_{s.lower()}")],
            {"ARADDR": 31, "AWADDR": 31, "WDATA": 31, "RDATA": 31}.get(s),
        )
    )
HP0_SIGS = AXI_MM_SIGS + AXI_S2MM_SIGS
HP0_OUT = {"ARREADY", "RDATA", "RLAST", "RRESP", "RVALID", "AWREADY", "BRESP", "BVALID", "WREADY"}
for s in HP0_SIGS:
    ps_ports.append(
        port(
            f"S_AXI_HP0_{s}",
            "O" if s in HP0_OUT else "I",
            f"axi_mem_intercon_M00_AXI_{s}",
            [("axi_mem_intercon", f"M00_AXI_{s.lower()}")],
            {"ARADDR": 31, "AWADDR": 31, "WDATA": 63, "RDATA": 63}.get(s),
        )
    )
ps_bus = [
    busif(
        "M_AXI_GP0",
        "MASTER",
        "xilinx.com:interface:aximm:1.0",
        "ps7_M_AXI_GP0",
        GP0_SIGS,
        "M_AXI_GP0_",
        [("PROTOCOL", "AXI3"), ("DATA_WIDTH", "32"), ("ADDR_WIDTH", "32"), ("FREQ_HZ", "100000000")],
        datawidth=32,
    ),
    busif(
        "S_AXI_HP0",
        "SLAVE",
        "xilinx.com:interface:aximm:1.0",
        "axi_mem_intercon_M00_AXI",
        HP0_SIGS,
        "S_AXI_HP0_",
        [("PROTOCOL", "AXI3"), ("DATA_WIDTH", "64"), ("ADDR_WIDTH", "32"), ("FREQ_HZ", "100000000")],
        datawidth=64,
    ),
]
ps7 = f"""    <MODULE CONFIGURABLE="TRUE" COREREVISION="6" FULLNAME="/ps7" HWVERSION="5.5" INSTANCE="ps7" IPTYPE="PERIPHERAL" IS_ENABLE="1" IS_PL="FALSE" MODTYPE="processing_system7" VLNV="xilinx.com:ip:processing_system7:5.5">
      <DOCUMENTS/>
      <ADDRESSBLOCKS>
        <ADDRESSBLOCK ACCESS="read-write" INTERFACE="S_AXI_HP0" NAME="HP0_DDR_LOWOCM" RANGE="536870912" USAGE="memory"/>
      </ADDRESSBLOCKS>
{params(ps7_params)}
      <PORTS>
{chr(10).join(ps_ports)}
      </PORTS>
      <BUSINTERFACES>
{chr(10).join(ps_bus)}
      </BUSINTERFACES>
      <MEMORYMAP>
        <MEMRANGE ADDRESSBLOCK="Reg" BASENAME="C_BASEADDR" BASEVALUE="0x{DMA_BASE:08X}" HIGHNAME="C_HIGHADDR" HIGHVALUE="0x{DMA_HIGH:08X}" INSTANCE="dma" IS_DATA="TRUE" IS_INSTRUCTION="TRUE" MASTERBUSINTERFACE="M_AXI_GP0" MEMTYPE="REGISTER" SLAVEBUSINTERFACE="S_AXI_LITE"/>
        <MEMRANGE ADDRESSBLOCK="reg0" BASENAME="C_S_AXI_BASEADDR" BASEVALUE="0x{ENGINE_BASE:08X}" HIGHNAME="C_S_AXI_HIGHADDR" HIGHVALUE="0x{ENGINE_HIGH:08X}" INSTANCE="offload" IS_DATA="TRUE" IS_INSTRUCTION="TRUE" MASTERBUSINTERFACE="M_AXI_GP0" MEMTYPE="REGISTER" SLAVEBUSINTERFACE="s_axi"/>
      </MEMORYMAP>
      <PERIPHERALS>
        <PERIPHERAL INSTANCE="dma"/>
        <PERIPHERAL INSTANCE="offload"/>
      </PERIPHERALS>
    </MODULE>"""

OWNER[0] = None
# --- reset and interconnects (bus plumbing, ports only as far as the clock/reset nets) ---------
rst = f"""    <MODULE COREREVISION="13" FULLNAME="/rst_ps7_100M" HWVERSION="5.0" INSTANCE="rst_ps7_100M" IPTYPE="PERIPHERAL" IS_ENABLE="1" MODCLASS="PERIPHERAL" MODTYPE="proc_sys_reset" VLNV="xilinx.com:ip:proc_sys_reset:5.0">
      <DOCUMENTS/>
{params({"C_FAMILY": "zynq", "C_EXT_RST_WIDTH": "4", "C_AUX_RST_WIDTH": "4", "C_EXT_RESET_HIGH": "0", "C_AUX_RESET_HIGH": "0", "C_NUM_BUS_RST": "1", "C_NUM_PERP_RST": "1", "C_NUM_INTERCONNECT_ARESETN": "1", "C_NUM_PERP_ARESETN": "1"})}
      <PORTS>
{port("slowest_sync_clk", "I", CLK, [("ps7", "FCLK_CLK0")], sigis="clk", extra=' CLKFREQUENCY="100000000"')}
{port("ext_reset_in", "I", "ps7_FCLK_RESET0_N", [("ps7", "FCLK_RESET0_N")], sigis="rst")}
{port("peripheral_aresetn", "O", RSTN, [("dma", "axi_resetn"), ("offload", "aresetn"), ("ps7_axi_periph", "ARESETN"), ("axi_mem_intercon", "ARESETN")], left=0, sigis="rst")}
      </PORTS>
      <BUSINTERFACES/>
    </MODULE>"""


def interconnect(inst, nsi, nmi, busifs):
    return f'''    <MODULE COREREVISION="21" FULLNAME="/{inst}" HWVERSION="2.1" INSTANCE="{inst}" IPTYPE="BUS" IS_ENABLE="1" MODCLASS="BUS" MODTYPE="axi_interconnect" VLNV="xilinx.com:ip:axi_interconnect:2.1">
      <DOCUMENTS/>
{params({"NUM_SI": str(nsi), "NUM_MI": str(nmi), "STRATEGY": "0", "ENABLE_ADVANCED_OPTIONS": "0"})}
      <PORTS>
{port("ACLK", "I", CLK, [("ps7", "FCLK_CLK0")], sigis="clk", extra=' CLKFREQUENCY="100000000"')}
{port("ARESETN", "I", RSTN, [("rst_ps7_100M", "peripheral_aresetn")], sigis="rst")}
{chr(10).join(port(p, d, sig, [(o, n)], left, sigis) for p, d, sig, o, n, left, sigis in REFS.get(inst, []))}
      </PORTS>
      <BUSINTERFACES/>
    </MODULE>'''


hwh = f"""<?xml version="1.0" encoding="UTF-8" standalone="no" ?>
<EDKSYSTEM EDWVERSION="1.2" TIMESTAMP="Mon Jan  5 12:00:00 2026" VIVADOVERSION="2024.2">

  <SYSTEMINFO ARCH="zynq" BOARD="tul.com.tw:pynq-z2:part0:1.0" DEVICE="7z020" NAME="offload" PACKAGE="clg400" SPEEDGRADE="-1"/>

  <EXTERNALPORTS/>

  <EXTERNALINTERFACES/>

  <MODULES>
{dma}
{engine}
{ps7}
{interconnect("axi_mem_intercon", 2, 1, [])}
{interconnect("ps7_axi_periph", 1, 2, [])}
{rst}
  </MODULES>

</EDKSYSTEM>
"""
OUT = Path(__file__).resolve().parent / "offload_engine.hwh"

if __name__ == "__main__":
    OUT.write_text(hwh)
    print(f"wrote {OUT}")
print(len(hwh))
