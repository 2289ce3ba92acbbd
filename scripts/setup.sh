#!/bin/sh
# Set up previewer on Debian/Ubuntu: system packages, a project virtual environment in .venv
# with the locked Python dependencies (requirements.lock, generated from pyproject.toml), and
# previewer itself installed into it. Safe to run again; it only adds what is missing.
#
#   scripts/setup.sh            libraries and tools previewer and its tests need
#   scripts/setup.sh --bench    also the peer tools the benchmark compares with
#   scripts/setup.sh --desktop  also GNOME's thumbnail factory (python3-gi, gir1.2-gnomedesktop-3.0)
#                               and a copy of previewer under /usr/local, where the
#                               factory's sandbox can run it (tests/test_gnome_factory.py; CI uses it)
set -eu

cd "$(dirname "$0")/.."

BENCH=0
DESKTOP=0
for arg in "$@"; do
    case "$arg" in
        --bench) BENCH=1 ;;
        --desktop) DESKTOP=1 ;;
        *) echo "usage: scripts/setup.sh [--bench] [--desktop]" >&2; exit 2 ;;
    esac
done
if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi

# python3-venv: the virtual environment; libmagic1: content sniffing (python-magic).
PACKAGES="python3 python3-venv libmagic1"
# ghostscript: EPS/PS; libmagickwand-6.q16-6 (Wand) and imagemagick-6-common (its coders and
# configuration): the ImageMagick catch-all converter.
PACKAGES="$PACKAGES ghostscript libmagickwand-6.q16-6 imagemagick-6-common"
# Office documents: headless LibreOffice (-nogui), its Python UNO bridge for Debian's python3,
# and metric-compatible fonts (Calibri/Cambria, Arial/Times/Courier, DejaVu, CJK).
PACKAGES="$PACKAGES libreoffice-writer-nogui libreoffice-calc-nogui libreoffice-impress-nogui"
PACKAGES="$PACKAGES libreoffice-draw-nogui python3-uno fonts-liberation2 fonts-crosextra-carlito"
PACKAGES="$PACKAGES fonts-crosextra-caladea fonts-dejavu-core fonts-wqy-zenhei"
# redis-server: the broker the queue tests (tests/test_queue.py) start on a loopback port.
PACKAGES="$PACKAGES redis-server"
# bubblewrap: the document engines (LibreOffice, Ghostscript, ImageMagick) run in an empty network
# namespace with a private file view (README, "Security and isolation"); util-linux (unshare,
# setpriv, prlimit) is part of every Debian system.
PACKAGES="$PACKAGES bubblewrap"
# imagemagick-6.q16 (the convert command): the tests make PICT inputs with it and run it as the
# control of a sandbox test; previewer itself uses only the library.
PACKAGES="$PACKAGES imagemagick-6.q16"
# ffmpeg (ffmpeg, ffprobe): video and audio previews and multimedia metadata.
PACKAGES="$PACKAGES ffmpeg"
# tesseract-ocr: OCR text (--metadata ocr); libimage-exiftool-perl: EXIF of RAW and video files.
PACKAGES="$PACKAGES tesseract-ocr tesseract-ocr-eng libimage-exiftool-perl"
# chromium, chromium-driver: the browser test of previewer serve's page (tests/test_serve_page.py).
PACKAGES="$PACKAGES chromium chromium-driver"
if [ "$BENCH" = 1 ]; then
    PACKAGES="$PACKAGES mupdf-tools poppler-utils imagemagick libvips-tools enscript"
    # libraw-bin: dcraw_emu, the RAW peer of benchmarks/bench.py --only raw.
    PACKAGES="$PACKAGES libraw-bin"
    # ffmpegthumbnailer: the peer of the video case (the audio case's peer is plain ffmpeg).
    PACKAGES="$PACKAGES ffmpegthumbnailer"
    # gnome-font-viewer: gnome-thumbnail-font, the peer of the font case.
    PACKAGES="$PACKAGES gnome-font-viewer"
fi
if [ "$DESKTOP" = 1 ]; then
    PACKAGES="$PACKAGES python3-gi gir1.2-gnomedesktop-3.0"
fi

missing=""
for pkg in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $pkg"
    fi
done
if [ -n "$missing" ]; then
    echo "setup: installing system packages:$missing" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $($PYTHON --version)" >&2
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --require-hashes -r requirements.lock
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
if [ "$DESKTOP" = 1 ]; then
    # GNOME runs thumbnailers under bubblewrap with only /usr visible: a copy of previewer on
    # Debian's own Python under /usr/local (README, "Desktop thumbnails").
    echo "setup: installing previewer under /usr/local for desktop thumbnailers" >&2
    [ -x /usr/local/lib/previewer/bin/python ] || $SUDO /usr/bin/python3 -m venv /usr/local/lib/previewer
    $SUDO /usr/local/lib/previewer/bin/python -m pip install -q --disable-pip-version-check \
        --require-hashes -r requirements.lock
    $SUDO /usr/local/lib/previewer/bin/python -m pip install -q --disable-pip-version-check \
        --no-deps --no-build-isolation --force-reinstall .
    $SUDO ln -sf /usr/local/lib/previewer/bin/previewer /usr/local/bin/previewer
fi
echo "setup: ready; run .venv/bin/previewer --help" >&2
