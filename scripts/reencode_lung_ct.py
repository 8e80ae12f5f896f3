"""Re-encode the real chest CT test archive losslessly (JPEG-LS) for tests/data/lung_ct.

    python scripts/reencode_lung_ct.py SOURCE.tar.gz tests/data/lung_ct/Lung_Dx-A0001.tar.gz

Every ``ct/*.dcm`` slice of the source archive (Lung-PET-CT-Dx, implicit VR little endian) is
compressed with JPEG-LS lossless (1.2.840.10008.1.2.4.80, CharLS through pyjpegls) and checked to
decode to the same pixel values; every other member (``annotation/*.xml``) is copied unchanged.
Members keep their names and order-independent content; the archive is written deterministically
(sorted names, the source's modification times, gzip header time 0).
"""

from __future__ import annotations

import argparse
import gzip
import io
import tarfile

import numpy as np
import pydicom
from pydicom.uid import JPEGLSLossless


def reencode_slice(data: bytes) -> bytes:
    """One DICOM slice compressed with JPEG-LS lossless; raises if the pixels do not round-trip."""
    ds = pydicom.dcmread(io.BytesIO(data))
    pixels = ds.pixel_array.copy()
    ds.compress(JPEGLSLossless, generate_instance_uid=False)  # the annotations are named by this UID
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    back = pydicom.dcmread(io.BytesIO(out.getvalue())).pixel_array
    if not np.array_equal(back, pixels):
        raise ValueError("JPEG-LS round trip changed pixel values")
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("target")
    args = parser.parse_args(argv)
    raw = io.BytesIO()
    with tarfile.open(args.source) as src, tarfile.open(fileobj=raw, mode="w") as dst:
        for member in sorted(src.getmembers(), key=lambda m: m.name):
            info = tarfile.TarInfo(member.name)
            info.mtime, info.mode = member.mtime, member.mode
            if member.isdir():
                info.type = tarfile.DIRTYPE
                dst.addfile(info)
                continue
            data = src.extractfile(member).read()
            if member.name.startswith("ct/") and member.name.endswith(".dcm"):
                data = reencode_slice(data)
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data))
    with open(args.target, "wb") as fh, gzip.GzipFile(fileobj=fh, mode="wb", mtime=0, filename="") as gz:
        gz.write(raw.getvalue())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
