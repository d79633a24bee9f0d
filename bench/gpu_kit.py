"""What `python -m bench.gpu` needs on a lent GPU machine and its image lacks, carried there in
parts. (On a GPU machine of your own, install onnxruntime-gpu instead: batch/README.md, "On a
GPU".)

The development sandbox's GPU machines, reached through its remote-run ("device") tool, have
CUDA 13, cuDNN 9 and PyTorch's nvidia-* wheels, onnxruntime's CPU build and no AWS libraries;
one call carries at most 64 MiB of ignored files, and onnxruntime-gpu's wheel alone is 256 MB.
So the wheels travel as a tar cut into parts:

    python -m bench.gpu_kit pack       # here: KIT_DIR/kit.json and KIT_DIR/part-1 ... part-N

then one device call per part, each the same command (on one warm machine: a call within its
30 s of the last), carrying `.gpu/kit.json`, `.gpu/part-K` and `build/models`:

    python3 -m bench.gpu_kit device

It keeps each carried part (sha256 checked) in KEEP, outside the checkout; once it has every
part it joins them, checks the tar's sha256, installs the wheels into SITE (`pip install
--no-index --no-deps --target`, ahead of the image's packages on PYTHONPATH) and runs `python -m
bench.gpu` with $OUT/gpu.json and $OUT/gpu.log. Until then it says which parts it still lacks.
Arguments after `--` go to bench.gpu. Only the standard library is imported here (and
model_api.integrity, which imports nothing else): on the device this runs before anything is
installed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The serving library's own sha256 (standard library only). On the device nothing is installed
# yet when this runs: there, the checkout's copy, as layers/models/find_model.py takes it.
try:
    from model_api.integrity import file_sha256, sha256_of
except ImportError:
    sys.path.insert(0, str(ROOT / "layers" / "serving" / "python"))
    from model_api.integrity import file_sha256, sha256_of

KIT_DIR = ROOT / ".gpu"  # ignored (.gitignore): nothing of it is committed
MANIFEST = KIT_DIR / "kit.json"
# A call carries at most 64 MiB (the device tool's limit): the working tree, build/models
# and one part, with this much to spare for files changed after the pack
CARRY_LIMIT = 64 * 2**20
CARRY_SPARE = 2 * 2**20
KEEP = Path("/var/tmp/model-api-gpu-kit")
SITE = Path("/tmp/model-api-gpu-site")
# The device image has these (its PyTorch's: ../.library/device/KINDS.md); pip resolves them
# too, they are left out of the kit
DEVICE_HAS = re.compile(r"^(numpy|sympy|mpmath|networkx|nvidia_.*)-", re.IGNORECASE)
# What bench.gpu imports beyond the batch image: the moto server S3, DynamoDB and EventBridge run
# on (bench.batch.moto_server), at requirements-dev.txt's version
BENCH_EXTRAS = "moto[s3,dynamodb,events]"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64")


def image_requirements() -> list[str]:
    """The arguments of batch/Dockerfile's `RUN pip install --disable-pip-version-check` (the
    batch image's pinned packages, quotes removed). Raises ValueError when it has none."""
    dockerfile = (ROOT / "batch" / "Dockerfile").read_text()
    found = re.search(r"^RUN pip install --disable-pip-version-check (.+)$",
                      dockerfile.replace("\\\n", " "), re.MULTILINE)
    if found is None:
        raise ValueError("batch/Dockerfile has no `RUN pip install --disable-pip-version-check`")
    return [argument.strip('"') for argument in found[1].split()]


def kit_requirements() -> list[str]:
    """The batch image's packages without its CUDA libraries (the device has its own CUDA 13)
    and onnxruntime-gpu without the extras that pull them, plus moto for bench.gpu's fake S3."""
    dev = (ROOT / "requirements-dev.txt").read_text()
    moto = re.search(r"^moto\[server\]==(\S+)", dev, re.MULTILINE)
    if moto is None:
        raise ValueError("requirements-dev.txt pins no moto[server]")
    wanted = [re.sub(r"\[.*\]", "", name) for name in image_requirements()
              if not name.startswith("nvidia-")]
    return [*wanted, f"{BENCH_EXTRAS}=={moto[1]}", "flask", "flask-cors"]


def part_bytes() -> int:
    """The most a part can hold, whole MiB: what a call carries besides it (the working tree
    as the device tool sends it, tracked and untracked-but-not-ignored files, and the exported
    models) taken off CARRY_LIMIT, with CARRY_SPARE left. Raises ValueError when nothing is
    left."""
    from model_registry.registry import PROJECT

    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    tree = sum((ROOT / name).stat().st_size for name in listed if (ROOT / name).is_file())
    models = sum(path.stat().st_size for path in PROJECT.models_dir.rglob("*") if path.is_file())
    room = (CARRY_LIMIT - tree - models - CARRY_SPARE) // 2**20 * 2**20
    if room <= 0:
        raise ValueError(f"the working tree ({tree / 2**20:.1f} MiB) and the models leave no room "
                         f"in a call's {CARRY_LIMIT // 2**20} MiB")
    return room


def split(archive: Path, into: Path, part_bytes: int) -> list[dict[str, Any]]:
    """Cut `archive` into `into`/part-1, part-2, ... of at most `part_bytes` bytes each: their
    names, sizes and sha256, in order."""
    parts: list[dict[str, Any]] = []
    with archive.open("rb") as stream:
        while block := stream.read(part_bytes):
            path = into / f"part-{len(parts) + 1}"
            path.write_bytes(block)
            parts.append({"name": path.name, "bytes": len(block),
                          "sha256": sha256_of(block)})
    return parts


def pack(kit_dir: Path = KIT_DIR) -> dict[str, Any]:
    """Download the kit's wheels (kit_requirements, CPython 3.12 on x86-64 Linux, versions
    constrained to this checkout's .venv where it has them), tar them and cut the tar into
    parts of part_bytes(); write and return the manifest. Raises subprocess.CalledProcessError
    when pip fails."""
    shutil.rmtree(kit_dir, ignore_errors=True)
    wheels = kit_dir / "wheels"
    wheels.mkdir(parents=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as constraints:
        freeze = [sys.executable, "-m", "pip", "freeze", "--exclude-editable"]
        constraints.write(subprocess.run(freeze, capture_output=True, text=True,
                                         check=True).stdout)
        constraints.flush()
        platforms = [argument for name in PLATFORMS for argument in ("--platform", name)]
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(wheels),
                        "--only-binary=:all:", "--python-version", "3.12", "--implementation",
                        "cp", *platforms, "--platform", "any", "-c", constraints.name,
                        *kit_requirements()], check=True)
    for wheel in wheels.iterdir():
        if DEVICE_HAS.match(wheel.name):
            wheel.unlink()
    archive = kit_dir / "kit.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(wheels, arcname="wheels")
    manifest = {"tar_sha256": file_sha256(archive), "tar_bytes": archive.stat().st_size,
                "wheels": sorted(wheel.name for wheel in wheels.iterdir()),
                "parts": split(archive, kit_dir, part_bytes())}
    archive.unlink()
    shutil.rmtree(wheels)
    (kit_dir / "kit.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def keep_parts(manifest: dict[str, Any], carried: Path, keep: Path) -> list[str]:
    """Move the parts carried into `carried` to `keep` (a part whose sha256 is not the
    manifest's is dropped, with a line on stderr) and return the names still missing there."""
    keep.mkdir(parents=True, exist_ok=True)
    for part in manifest["parts"]:
        source = carried / part["name"]
        if source.is_file():
            if file_sha256(source) == part["sha256"]:
                shutil.move(source, keep / part["name"])
            else:
                print(f"gpu_kit: {part['name']} is not the manifest's (sha256): dropped, carry "
                      "it again", file=sys.stderr)
                source.unlink()
    return [part["name"] for part in manifest["parts"] if not (keep / part["name"]).is_file()]


def join(manifest: dict[str, Any], keep: Path, into: Path) -> Path:
    """The parts in `keep` joined into `into`/kit.tar; ValueError when its sha256 is not the
    manifest's."""
    archive = into / "kit.tar"
    with archive.open("wb") as out:
        for part in manifest["parts"]:
            with (keep / part["name"]).open("rb") as stream:
                shutil.copyfileobj(stream, out)
    if file_sha256(archive) != manifest["tar_sha256"]:
        raise ValueError("the joined kit's sha256 is not the manifest's: pack it again")
    return archive


def install(archive: Path, site: Path) -> None:
    """Unpack the kit's wheels and install them into `site` (no index, no dependencies: the
    kit holds every one the image lacks). Raises subprocess.CalledProcessError when pip fails."""
    with tempfile.TemporaryDirectory() as work:
        with tarfile.open(archive) as tar:
            tar.extractall(work, filter="data")
        wheels = sorted(str(path) for path in (Path(work) / "wheels").glob("*.whl"))
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index",
                        "--no-deps", "--no-compile", "--disable-pip-version-check",
                        "--target", str(site), *wheels], check=True)


def device(bench_args: list[str], keep: Path = KEEP, site: Path = SITE) -> int:
    """On the device machine: keep the carried parts; with all of them, install the kit once
    and run bench.gpu (its exit code), its JSON and log under $OUT; else 0 and what is
    missing. Raises FileNotFoundError when .gpu/kit.json was not carried."""
    manifest = json.loads(MANIFEST.read_text())
    missing = keep_parts(manifest, KIT_DIR, keep)
    print(f"gpu_kit: {len(manifest['parts']) - len(missing)} of {len(manifest['parts'])} parts "
          f"kept in {keep}" + (f"; still to carry: {', '.join(missing)}" if missing else ""))
    if missing:
        return 0
    installed = site / ".installed"
    if not installed.is_file() or installed.read_text() != manifest["tar_sha256"]:
        shutil.rmtree(site, ignore_errors=True)
        install(join(manifest, keep, keep), site)
        (keep / "kit.tar").unlink()
        installed.write_text(manifest["tar_sha256"])
    out = Path(os.environ.get("OUT", tempfile.mkdtemp(prefix="gpu-out-")))
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join([str(site), str(ROOT),
                                          str(ROOT / "layers" / "serving" / "python")])}
    ran = subprocess.run([sys.executable, "-m", "bench.gpu", "--out", str(out / "gpu.json"),
                          *bench_args], env=env, cwd=ROOT, capture_output=True, text=True,
                         check=False)
    # the log whole (the runner's logs and metric lines are its stderr); the table on stdout
    (out / "gpu.log").write_text(ran.stderr + ran.stdout)
    print(ran.stdout, end="")
    if ran.returncode != 0:
        print(f"bench.gpu exited {ran.returncode}; its stderr ends:\n{ran.stderr[-4000:]}")
    return ran.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_kit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=("pack", "device"))
    parser.add_argument("bench_args", nargs="*", help="after --: bench.gpu's arguments (device)")
    args = parser.parse_args(argv)
    if args.step == "pack":
        manifest = pack()
        carry = ", ".join(f'".gpu/{part["name"]}"' for part in manifest["parts"])
        print(f"{len(manifest['wheels'])} wheels, {manifest['tar_bytes'] / 2**20:.0f} MiB in "
              f"{len(manifest['parts'])} parts under {KIT_DIR}: one device call each "
              f"({carry}), each carrying \".gpu/kit.json\" and \"build/models\" too, command "
              "`python3 -m bench.gpu_kit device`")
        return 0
    return device(args.bench_args)


if __name__ == "__main__":
    raise SystemExit(main())
