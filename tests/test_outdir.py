"""Output directories: fabriclab never deletes or overwrites what it did not write.

A directory holding anything else is refused (exit 2, the file survives) by run, compare,
sweep and report; the current directory, its ancestors, mount points, non-directories and
unwritable places are refused before anything runs; an earlier result is replaced only with
--force, atomically, and not even then when the user put a file into it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fabriclab import api, cli, outdir
from fabriclab.metrics import results as R

TINY = {"name": "tiny", "topology": {"leaves": 2, "spines": 1, "hosts_per_leaf": 2},
        "workload": [{"kind": "incast", "receiver": "h0", "senders": 3, "bytes": 20000}]}


@pytest.fixture
def spec(tmp_path) -> Path:
    p = tmp_path / "tiny.yaml"
    p.write_text(yaml.safe_dump(TINY))
    return p


@pytest.fixture
def engine_calls(monkeypatch) -> list:
    """Every spec the engines are asked to run (the real engine still runs)."""
    calls = []
    real = api._engine_run

    def spy(spec, progress):
        calls.append(spec)
        return real(spec, progress)

    monkeypatch.setattr(api, "_engine_run", spy)
    return calls


def _main(args, capsys) -> tuple[int, str]:
    rc = cli.main(["-q", *args])
    return rc, capsys.readouterr().err


COMMANDS = {
    "run": lambda spec, out: ["run", str(spec), "--out", str(out), "--no-report"],
    "compare": lambda spec, out: ["compare", str(spec), "--schemes", "udp,ecmp_dcqcn",
                                  "--out", str(out), "--jobs", "1", "--no-report"],
    "sweep": lambda spec, out: ["sweep", str(spec), "--param", "workload.0.senders=2,3",
                                "--out", str(out), "--jobs", "1", "--no-report"],
}


def _snapshot(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*"))
            if p.is_file()}


@pytest.mark.parametrize("cmd", sorted(COMMANDS))
def test_foreign_file_refused_and_survives(cmd, spec, tmp_path, capsys, engine_calls):
    """run/compare/sweep into a directory holding a user's file: exit 2, one line naming the
    file and the fix, nothing run, the file and the directory as they were."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes\n")
    rc, err = _main(COMMANDS[cmd](spec, out), capsys)
    assert rc == 2, err
    assert "notes.txt" in err and "--out" in err and err.count("\n") == 1, err
    assert engine_calls == []
    assert _snapshot(out) == {"notes.txt": b"my notes\n"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "tiny.yaml"]


def test_report_refuses_foreign_file(spec, tmp_path, capsys):
    """`fabriclab report` on a run the user added a file to: exit 2, the file survives and
    no report is written."""
    out = tmp_path / "run"
    assert _main(COMMANDS["run"](spec, out), capsys)[0] == 0
    (out / "mine.csv").write_text("a,b\n")
    before = _snapshot(out)
    rc, err = _main(["report", str(out)], capsys)
    assert rc == 2 and "mine.csv" in err, err
    assert _snapshot(out) == before and not (out / "report.html").exists()


@pytest.mark.parametrize("where", [".", "..", "{cwd}", "{cwd}/..", "/"])
def test_current_directory_and_ancestors_refused_before_running(
        where, spec, tmp_path, capsys, monkeypatch, engine_calls):
    """--out . (or an ancestor of the current directory): exit 2 before any simulation; no
    staging directory appears anywhere near it."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "keep.txt").write_text("x")
    monkeypatch.chdir(work)
    before = sorted(os.listdir(tmp_path)), sorted(os.listdir(work))
    rc, err = _main(["run", str(spec), "--out", where.format(cwd=work)], capsys)
    assert rc == 2 and "current directory" in err, err
    assert engine_calls == []
    assert (sorted(os.listdir(tmp_path)), sorted(os.listdir(work))) == before


def test_existing_file_refused(spec, tmp_path, capsys, engine_calls):
    """--out naming an existing file: exit 2, nothing run, the file unchanged."""
    f = tmp_path / "results.txt"
    f.write_text("data")
    rc, err = _main(["run", str(spec), "--out", str(f)], capsys)
    assert rc == 2 and "not a directory" in err, err
    assert engine_calls == [] and f.read_text() == "data"


def _mount(target: Path, options: str) -> bool:
    target.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"{options},size=1m", "tmpfs",
                        str(target)], capture_output=True)
    return r.returncode == 0


def _umount(target: Path) -> None:
    subprocess.run(["umount", str(target)], capture_output=True)


def _some_mount_point() -> Path | None:
    """A directory another file system is mounted on (for runs without root)."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        p = Path(line.split()[4].replace("\\040", " "))
        if p != Path("/") and p.is_dir() and not Path.cwd().is_relative_to(p):
            return p
    return None


def test_mount_point_refused(spec, tmp_path, capsys, engine_calls):
    """--out naming a mount point: exit 2 before running (a mount point cannot be swapped
    for a new directory, and its contents are not fabriclab's)."""
    mnt = tmp_path / "mnt"
    mounted = _mount(mnt, "rw")
    try:
        target = mnt if mounted else _some_mount_point()
        if target is None:
            pytest.skip("no mount point to try")
        rc, err = _main(["run", str(spec), "--out", str(target)], capsys)
        assert rc == 2 and "mount point" in err, err
        assert engine_calls == []
    finally:
        if mounted:
            _umount(mnt)


def test_unwritable_location_refused(spec, tmp_path, capsys, engine_calls):
    """--out below a read-only file system (as root) or a directory without write permission
    (otherwise): exit 2 before running, naming the place and why."""
    ro = tmp_path / "ro"
    mounted = _mount(ro, "ro")
    try:
        if not mounted:
            if os.geteuid() == 0:
                pytest.skip("root may write anywhere and mounting a read-only file system failed")
            ro.chmod(0o555)
        rc, err = _main(["run", str(spec), "--out", str(ro / "new" / "run")], capsys)
        assert rc == 2, err
        assert f"cannot write in {ro}" in err and ("read-only" in err or "permission" in err), err
        assert engine_calls == []
    finally:
        if mounted:
            _umount(ro)
        else:
            ro.chmod(0o755)


@pytest.mark.parametrize("cmd", sorted(COMMANDS))
def test_replacing_needs_force_and_is_atomic(cmd, spec, tmp_path, capsys, engine_calls):
    """A second run into an earlier result: refused without --force (exit 2, unchanged,
    nothing run); with --force replaced as a whole: only the new files, no hidden leftovers."""
    out = tmp_path / "res"
    assert _main(COMMANDS[cmd](spec, out), capsys)[0] == 0
    first = _snapshot(out)
    n = len(engine_calls)
    rc, err = _main(COMMANDS[cmd](spec, out), capsys)
    assert rc == 2 and "--force" in err, err
    assert _snapshot(out) == first and len(engine_calls) == n
    spec.write_text(yaml.safe_dump({**TINY, "seed": 99, "workload": [
        {"kind": "incast", "receiver": "h1", "senders": 2, "bytes": 30000}]}))
    rc, err = _main([*COMMANDS[cmd](spec, out), "--force"], capsys)
    assert rc == 0, err
    second = _snapshot(out)
    assert second != first
    assert all(b"h1" in v for k, v in second.items() if k.endswith("flows.csv"))
    assert sorted(os.listdir(tmp_path)) == ["res", "tiny.yaml"]
    assert outdir.inspect(out).foreign == []


def test_failed_write_keeps_the_earlier_result(spec, tmp_path, capsys, monkeypatch):
    """An interrupt while the new result is written: the earlier result is untouched and the
    staging directory is gone."""
    out = tmp_path / "res"
    assert _main(COMMANDS["run"](spec, out), capsys)[0] == 0
    first = _snapshot(out)

    def boom(self, name, f):
        raise KeyboardInterrupt

    monkeypatch.setattr(R.RunResult, "write_csv", boom)
    rc, err = _main([*COMMANDS["run"](spec, out), "--force"], capsys)
    assert rc == 130, err
    assert _snapshot(out) == first
    assert sorted(os.listdir(tmp_path)) == ["res", "tiny.yaml"]


@pytest.mark.parametrize("cmd", sorted(COMMANDS))
def test_foreign_file_inside_a_result_blocks_force(cmd, spec, tmp_path, capsys, engine_calls):
    """A user's file inside an earlier result (or one of a comparison's runs): --force is
    refused too, naming the file, which survives."""
    out = tmp_path / "res"
    assert _main(COMMANDS[cmd](spec, out), capsys)[0] == 0
    sub = out if cmd == "run" else out / outdir.inspect(out).runs[-1]
    (sub / "analysis.ipynb").write_text("{}")
    n = len(engine_calls)
    rc, err = _main([*COMMANDS[cmd](spec, out), "--force"], capsys)
    assert rc == 2 and "analysis.ipynb" in err, err
    assert (sub / "analysis.ipynb").read_text() == "{}" and len(engine_calls) == n


def test_stale_staging_removed_only_when_marked_and_dead(spec, tmp_path, capsys):
    """A killed run leaves `.NAME.partial-PID`; the next run into NAME removes it when that
    process is dead and the directory carries fabriclab's staging mark, and nothing else."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".res.partial-{dead.pid}"
    unmarked = tmp_path / f".res.partial-{dead.pid + 1}"
    alive = tmp_path / f".res.partial-{os.getpid()}"
    for d in (stale, unmarked, alive):
        d.mkdir()
        (d / "flows.csv").write_text("x\n")
    (stale / outdir.STAGING_MARK).write_text(json.dumps({"pid": dead.pid}))
    (alive / outdir.STAGING_MARK).write_text(json.dumps({"pid": os.getpid()}))
    (tmp_path / ".other.partial-1").mkdir()
    assert _main(COMMANDS["run"](spec, tmp_path / "res"), capsys)[0] == 0
    left = sorted(os.listdir(tmp_path))
    assert stale.name not in left
    assert {unmarked.name, ".other.partial-1", "res"} <= set(left)


def test_result_from_before_manifests(spec, tmp_path, capsys):
    """A result written before manifests existed is recognised: --force replaces it, a
    foreign file in it still blocks, `report` remakes it and gives it a true manifest."""
    out = tmp_path / "cmp"
    assert _main(COMMANDS["compare"](spec, out)[:-1], capsys)[0] == 0  # with its page
    for m in out.rglob(outdir.MANIFEST):
        m.unlink()
    found = outdir.inspect(out)
    assert (found.kind, found.runs, found.foreign) == ("compare", ["udp", "ecmp_dcqcn"], [])
    (out / "udp" / "x.txt").write_text("x")
    assert outdir.inspect(out).foreign == ["udp/x.txt"]
    (out / "udp" / "x.txt").unlink()
    rc, err = _main(["report", str(out)], capsys)
    assert rc == 0, err
    m = outdir.read_manifest(out)
    assert m["kind"] == "compare" and m["runs"] == ["udp", "ecmp_dcqcn"]
    assert outdir.inspect(out).foreign == []
    assert _main([*COMMANDS["compare"](spec, out), "--force"], capsys)[0] == 0


def test_manifest_stays_true_after_report(spec, tmp_path, capsys):
    """The manifest lists exactly the files fabriclab wrote, also after `report` added plots
    and pages to a run written with --no-report."""
    out = tmp_path / "run"
    assert _main(COMMANDS["run"](spec, out), capsys)[0] == 0
    assert not (out / "report.html").exists()
    assert _main(["report", str(out)], capsys)[0] == 0
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    recorded = set(outdir.read_manifest(out)["files"])
    assert "report.html" in recorded and any(f.startswith("plots/") for f in recorded)
    assert recorded == files - {outdir.MANIFEST}
