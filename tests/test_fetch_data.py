"""scripts/fetch_data.py: the data folder filled from a local copy and verified against data/SHA256SUMS,
the two derived files rebuilt exactly, provenance paths rewritten; never the network (downloads are faked)."""

import hashlib
import json
import re
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
import fetch_data as fd  # noqa: E402

sys.path.pop(0)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def small_copy(tmp_path):
    """A two-file data folder and its manifest (no real data needed)."""
    origin = tmp_path / "origin"
    files = {
        "gsm8k/test.jsonl": b'{"question": "1+1?", "answer": "#### 2"}\n',
        "glue/RTE/dev.tsv": b"index\tlabel\n",
    }
    for rel, data in files.items():
        (origin / rel).parent.mkdir(parents=True, exist_ok=True)
        (origin / rel).write_bytes(data)
    manifest = tmp_path / "SHA256SUMS"
    manifest.write_text("".join(f"{_sha(data)}  {rel}\n" for rel, data in files.items()))
    return origin, manifest


def test_manifest_lists_every_source_and_every_source_is_pinned():
    sums = fd.read_manifest()
    assert set(sums) == set(fd.SOURCES) and len(sums) == 21
    for source in fd.SOURCES.values():
        for url in source.urls:
            assert re.fullmatch(
                r"https://raw\.githubusercontent\.com/[\w.-]+/[\w.-]+/[0-9a-f]{40}/\S+", url
            ), url


def test_copy_from_a_local_folder_verifies_and_check_detects_corruption(small_copy, tmp_path, capsys):
    origin, manifest = small_copy
    dest = tmp_path / "data"
    args = ["--manifest", str(manifest), "--data_dir", str(dest)]
    assert fd.main([*args, "--from", str(origin)]) == 0
    assert (dest / "gsm8k" / "test.jsonl").read_bytes() == (origin / "gsm8k" / "test.jsonl").read_bytes()
    assert fd.main([*args, "--check"]) == 0
    (dest / "glue" / "RTE" / "dev.tsv").write_bytes(b"index\tlabel\n0\tx\n")
    assert fd.main([*args, "--check"]) == 1
    err = capsys.readouterr().err
    assert "glue/RTE/dev.tsv" in err and "differs from the manifest" in err and "fetch_data.py" in err
    # A second copy replaces only the bad file.
    assert fd.fill(dest, fd.read_manifest(manifest), origin, log=lambda _: None) == ["glue/RTE/dev.tsv"]
    assert fd.main([*args, "--check"]) == 0


def test_a_corrupted_or_missing_source_file_is_named_and_not_installed(small_copy, tmp_path, capsys):
    origin, manifest = small_copy
    dest = tmp_path / "data"
    (origin / "gsm8k" / "test.jsonl").write_bytes(b"tampered\n")
    assert fd.main(["--manifest", str(manifest), "--data_dir", str(dest), "--from", str(origin)]) == 1
    err = capsys.readouterr().err
    assert "gsm8k/test.jsonl" in err and "it was not installed" in err
    assert not (dest / "gsm8k" / "test.jsonl").exists()
    (origin / "gsm8k" / "test.jsonl").unlink()
    assert fd.main(["--manifest", str(manifest), "--data_dir", str(dest), "--from", str(origin)]) == 1
    assert "gsm8k/test.jsonl: not found in" in capsys.readouterr().err


def test_download_path_with_a_faked_network(monkeypatch, tmp_path):
    served = {"https://example.org/a": b'[\n    {"x": 1},\n    {"x": 2}\n]\n'}
    monkeypatch.setattr(fd, "download", lambda url: served[url])
    monkeypatch.setitem(
        fd.SOURCES, "x.jsonl", fd.Source(("https://example.org/a",), fd.json_array_lines_to_jsonl)
    )
    fd.fetch("x.jsonl", _sha(b'{"x": 1}\n{"x": 2}\n'), tmp_path)
    assert (tmp_path / "x.jsonl").read_bytes() == b'{"x": 1}\n{"x": 2}\n'
    with pytest.raises(fd.DataError, match="x.jsonl: the file from https://example.org/a has sha256"):
        fd.fetch("x.jsonl", "0" * 64, tmp_path / "other")


def test_no_network_gives_an_error_that_names_the_offline_route(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(fd.urllib.request, "urlopen", refuse)
    with pytest.raises(fd.DataError, match="could not download https://x.invalid/f.*--from DIR"):
        fd.download("https://x.invalid/f")


def test_format_mrpc_keeps_the_header_and_drops_the_dev_pairs():
    raw = (
        "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\r\n"
        "1\t10\t11\tA b.\tA  b.\r\n0\t20\t21\tC.\tD.\r\n1\t30\t31\tE.\tE!\r\n"
    ).encode()
    out = fd.format_mrpc(raw, b"20\t21\n")
    assert out.decode() == (
        "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\r\n1\t10\t11\tA b.\tA  b.\n1\t30\t31\tE.\tE!\n"
    )


def test_mbpp_plus_is_rebuilt_byte_for_byte_from_its_json_array(shared_data):
    jsonl = (shared_data / "mbpp" / "MbppPlus.jsonl").read_bytes()
    lines = jsonl.decode().splitlines()
    array = (
        "[\r\n" + ",\r\n".join(f"    {line}" for line in lines) + "\r\n]\r\n"
    ).encode()  # the source layout
    assert _sha(fd.json_array_lines_to_jsonl(array)) == fd.read_manifest()["mbpp/MbppPlus.jsonl"]


def test_copy_of_the_real_data_folder_passes_check(shared_data, tmp_path):
    dest = tmp_path / "data"
    installed = fd.fill(dest, fd.read_manifest(), shared_data, log=lambda _: None)
    assert len(installed) == 21
    assert fd.main(["--data_dir", str(dest), "--check"]) == 0
    assert fd.fill(dest, fd.read_manifest(), shared_data, log=lambda _: None) == []  # nothing to redo


def test_rewrite_provenance_maps_the_data_folder_to_data(tmp_path):
    folder = tmp_path / "elsewhere" / "bench"
    results = tmp_path / "results" / "run" / "seed42"
    results.mkdir(parents=True)
    (results / "config.yaml").write_text(
        "glue_dir: ../elsewhere/bench/glue\r\nother: ../elsewhere/benchmarks/x\r\n"
    )
    (results / "run.json").write_text(
        json.dumps(
            {"command": ["--data", f"{folder}/gsm8k/test.jsonl"], "kept": f"/x{folder}/gsm8k/test.jsonl"}
        )
    )
    (results / "notes.txt").write_text("../elsewhere/bench/glue\n")
    changed = fd.rewrite_provenance([tmp_path / "results"], folder / ".." / "bench", "../elsewhere/bench/")
    assert sorted(p.name for p in changed) == ["config.yaml", "run.json"]
    assert (
        results / "config.yaml"
    ).read_bytes() == b"glue_dir: data/glue\r\nother: ../elsewhere/benchmarks/x\r\n"
    run = json.loads((results / "run.json").read_text())
    assert run["command"][1] == "data/gsm8k/test.jsonl" and run["kept"] == f"/x{folder}/gsm8k/test.jsonl"
    assert (results / "notes.txt").read_text() == "../elsewhere/bench/glue\n"
    assert fd.rewrite_provenance([tmp_path / "results"], folder, "../elsewhere/bench") == []  # idempotent


def test_data_dir_default_and_relative_values(monkeypatch):
    monkeypatch.delenv(fd.DATA_DIR_ENV, raising=False)
    assert fd.data_dir() == REPO / "data"
    monkeypatch.setenv(fd.DATA_DIR_ENV, "../somewhere")
    assert fd.data_dir() == REPO / "../somewhere"
    assert fd.data_dir("/abs/data") == Path("/abs/data")


def test_configs_name_local_data_inside_the_data_folder():
    for path in sorted((REPO / "configs").rglob("*.yaml")):
        config = yaml.safe_load(path.read_text()) or {}
        for key in ("glue_dir", "data_path"):
            value = str(config.get(key) or "")
            if "/" in value and not re.fullmatch(r"[\w.-]+/[\w.-]+", value):  # local paths, not hub ids
                assert value.startswith("data/"), f"{path.name}: {key}: {value}"


def test_data_dir_setting_is_read_one_way(monkeypatch, tmp_path):
    from balora.repro.data import data_dir

    repo = Path(__file__).resolve().parent.parent
    monkeypatch.setenv("BALORA_DATA_DIR", str(tmp_path))
    assert data_dir() == tmp_path
    monkeypatch.setenv("BALORA_DATA_DIR", "elsewhere/data")
    assert data_dir() == repo / "elsewhere" / "data"  # relative: from the repository root, not the cwd
    monkeypatch.delenv("BALORA_DATA_DIR")
    assert data_dir() == repo / "data"
