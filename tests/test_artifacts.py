"""Artifacts: export a run, check the manifest against the files, unpack into a run every module reads."""

import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from serpent.artifacts import ArtifactError, export_artifacts, load_artifacts, verify_artifacts
from serpent.errors import SerpentError


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A micro run with checkpoints and induction tables, plus susceptibilities and a serpent frame (synthetic χ,
    real tokens) at two checkpoints: every kind of file an artifact folder holds."""
    from corpora import write_code_corpus
    from serpent.config import get_preset
    from serpent.embedding import serpent_frame
    from serpent.patterns import label_results
    from serpent.stages import run_pipeline
    from serpent.rundir import Run
    from serpent.stages import load_susceptibilities
    from serpent.susceptibility import SusceptibilityResult
    from serpent.tokens import fixed_windows

    root = tmp_path_factory.mktemp("art")
    corpus = write_code_corpus(root / "corpus", docs=30, lines=50, max_indent=2, words=(5, 5))
    cfg = get_preset("tiny").with_overrides(
        model={"d_model": 32, "d_head": 4, "n_ctx": 32, "d_vocab": 300},
        data={"corpus": f"files:{corpus}/*.py", "max_bytes": None, "tokenizer_train_bytes": 200_000,
              "test_fraction": 0.1},
        train={"steps": 20, "batch_size": 4, "log_checkpoints": 3, "linear_checkpoints": 2, "eval_every": 10,
               "eval_batches": 1, "warmup_steps": 5})
    run = Run.create(root / "runs" / "tiny", cfg)
    run_pipeline(run, ["data", "train", "induction"], progress=False, echo=lambda s: None)
    probe, _ = fixed_windows(run.tokens("test"), 3, 32, seed=1, bos_id=run.tokenizer().bos_id)
    seq, pos = np.repeat(np.arange(3), 31), np.tile(np.arange(1, 32), 3)
    g = np.random.default_rng(0)
    comps = [f"{l}:{h}" for l in range(2) for h in range(8)]
    for step in (0, 20):
        chi = g.normal(size=(len(seq), 16)).astype(np.float32)
        SusceptibilityResult(step=step, components=comps, chi=chi, chi_se=np.abs(chi) / 10, probe_tokens=probe.numpy(),
                             seq_index=seq, position=pos, doc_names=["a", "b", "c"], settings={"draws": 3}).save(
            run.path / "susceptibility" / f"step_{step:07d}.safetensors")
    maps = pd.DataFrame({"step": np.repeat([0, 20], len(seq)), "point": np.tile(np.arange(len(seq)), 2),
                         "x": g.normal(size=2 * len(seq)).astype(np.float32),
                         "y": g.normal(size=2 * len(seq)).astype(np.float32)})
    frame = serpent_frame(maps, label_results(load_susceptibilities(run), run.tokenizer()))
    frame.to_parquet(run.stage_dir("serpent") / "embedding.parquet", index=False)
    (run.path / "serpent" / "separation.json").write_text(json.dumps({"headline": "cross_token", "steps": {}}))
    for stage in ("llc", "susceptibility", "serpent"):                  # the synthetic stages count as done
        run.mark_stage(stage, "synthetic", 0.0, {})
    return run


def test_an_unpacked_folder_exported_again_keeps_its_origin(finished_run, tmp_path):
    """Exporting the unpacked copy of an artifact folder (after a newer serpent stage, say) names the original run
    and keeps its whole checkpoint schedule, though the copy holds only the kept checkpoints."""
    steps = finished_run.checkpoint_steps()
    first = export_artifacts(finished_run, tmp_path / "a", checkpoints=[steps[0], steps[-1]], train_tokens=2000,
                             test_tokens=500)
    copy = load_artifacts(tmp_path / "a", into=tmp_path / "unpacked")
    assert copy.checkpoint_steps() == [steps[0], steps[-1]] != steps
    again = export_artifacts(copy, tmp_path / "b", checkpoints=[steps[0], steps[-1]], train_tokens=2000,
                             test_tokens=500)
    assert again["all_checkpoints"] == steps
    assert again["origin"]["source_run"] == first["source_run"] and again["origin"]["commit"] == first["commit"]
    third = export_artifacts(load_artifacts(tmp_path / "b", into=tmp_path / "unpacked2"), tmp_path / "c",
                             checkpoints=[steps[-1]], train_tokens=2000, test_tokens=500)
    assert third["origin"] == again["origin"]                  # the first origin, not the intermediate copy
    verify_artifacts(tmp_path / "c")


def test_export_writes_a_manifest_that_matches_every_file(finished_run, tmp_path):
    steps = finished_run.checkpoint_steps()
    m = export_artifacts(finished_run, tmp_path / "tiny", checkpoints=[steps[0], steps[-1]], train_tokens=2000,
                         test_tokens=500)
    assert m["format"] == "serpent-artifacts/1" and m["preset"] == "tiny" and m["checkpoints"] == [0, 20]
    assert m["susceptibility_steps"] == [0, 20] and m["all_checkpoints"] == steps
    assert m["versions"]["torch"] == torch.__version__.split("+")[0] or m["versions"]["torch"] == torch.__version__
    assert {"config.json", "stages.json", "tokenizer/tokenizer.json", "induction/scores.parquet",
            "serpent/map.parquet", "data/train.npy", "checkpoints/step_0000020.safetensors"} <= set(m["files"])
    assert not any(f.endswith(".html") for f in m["files"])              # charts as PNG only
    assert m["total_bytes"] == sum(f["bytes"] for f in m["files"].values()) < 40e6
    ck = m["files"]["checkpoints/step_0000020.safetensors"]["tensors"]
    assert ck["embed.W_E"] == {"dtype": "BF16", "shape": [300, 32]}
    chi = m["files"]["susceptibility/step_0000020.safetensors"]["tensors"]["chi"]
    assert chi == {"dtype": "F16", "shape": [93, 16]}
    train = np.load(tmp_path / "tiny" / "data" / "train.npy")
    docs = json.loads((tmp_path / "tiny" / "data" / "train_docs.json").read_text())
    assert len(train) <= 2000 and m["files"]["data/train.npy"]["shape"] == [len(train)]
    full_starts, _ = finished_run.documents("train")
    assert docs["starts"] == [int(s) for s in full_starts if s < len(train)]      # whole documents only
    assert len(train) in set(full_starts.tolist())
    assert (train == np.asarray(finished_run.tokens("train")[:len(train)])).all()
    assert verify_artifacts(tmp_path / "tiny") == m


def test_export_keeps_the_clusters_file_when_small(finished_run, tmp_path):
    """Issue 34: the clusters' cards travel with the artifacts (the book reads them), unless the file is large."""
    p = finished_run.path / "serpent" / "clusters.json"
    try:
        p.write_text(json.dumps({"format": "serpent-clusters/1", "steps": [0], "cards": {"0": []}}))
        m = export_artifacts(finished_run, tmp_path / "small", train_tokens=500, test_tokens=200)
        assert m["files"]["serpent/clusters.json"]["bytes"] == p.stat().st_size
        run = load_artifacts(tmp_path / "small", into=tmp_path / "run")
        assert json.loads((run.path / "serpent" / "clusters.json").read_text())["steps"] == [0]
        p.write_text(json.dumps({"pad": "x" * 2_100_000}))
        m = export_artifacts(finished_run, tmp_path / "large", train_tokens=500, test_tokens=200)
        assert "serpent/clusters.json" not in m["files"]
    finally:
        p.unlink(missing_ok=True)


def test_loaded_artifacts_are_a_run_with_the_same_results(finished_run, tmp_path):
    from serpent.course import course_run, run_is_complete
    from serpent.stages import load_susceptibilities

    root = tmp_path / "root"
    export_artifacts(finished_run, root / "artifacts" / "tiny")
    run = load_artifacts("tiny", root=root)
    assert run.path == root / "runs" / "tiny-artifacts" and run_is_complete(run.path)
    assert run.checkpoint_steps() == [20]
    a, b = run.load_params(20), finished_run.load_params(20)
    assert all(a[k].dtype == torch.float32 and torch.allclose(a[k], b[k], rtol=1e-2, atol=1e-3) for k in b)
    sa, sb = load_susceptibilities(run), load_susceptibilities(finished_run)
    assert sa[20].chi.dtype == np.float32 and np.allclose(sa[20].chi, sb[20].chi, atol=2e-3)
    assert (sa[20].token_ids == sb[20].token_ids).all()
    fa = pd.read_parquet(run.path / "serpent" / "embedding.parquet")
    fb = pd.read_parquet(finished_run.path / "serpent" / "embedding.parquet")
    assert list(fa.columns) == list(fb.columns) and fa["0:0"].dtype == np.float32
    labels = [c for c in fb.columns if ":" not in c]
    pd.testing.assert_frame_equal(fa[labels], fb[labels])
    assert np.allclose(fa["1:7"], fb["1:7"], atol=2e-3)
    pd.testing.assert_frame_equal(pd.read_parquet(run.path / "induction" / "scores.parquet"),
                                  pd.read_parquet(finished_run.path / "induction" / "scores.parquet"))
    # the notebooks' entry point finds the artifacts when runs/tiny is absent, and reuses the unpacked copy
    stamp = (run.path / "artifact.json").stat().st_mtime_ns
    assert course_run("tiny", root=root, compute=False).path == run.path
    assert (run.path / "artifact.json").stat().st_mtime_ns == stamp
    # and without a preset it prefers the book's CPU run, then the full run's artifacts once they are committed
    from serpent.course import default_preset
    assert default_preset(root) == "tiny"
    export_artifacts(finished_run, root / "artifacts" / "cpu")
    assert default_preset(root) == "cpu"
    export_artifacts(finished_run, root / "artifacts" / "full")
    assert default_preset(root) == "full"
    assert course_run(root=root, compute=False).path == root / "runs" / "full-artifacts"


@pytest.mark.parametrize("damage, message", [
    ("flip", "sha256"), ("truncate", "bytes"), ("delete", "missing"), ("format", "format"), ("manifest", "no manifest"),
])
def test_damaged_artifacts_are_refused_with_the_file_named(finished_run, tmp_path, damage, message):
    art = tmp_path / "a"
    export_artifacts(finished_run, art)
    target = art / "susceptibility" / "step_0000020.safetensors"
    if damage == "flip":
        data = bytearray(target.read_bytes()); data[-1] ^= 0xFF; target.write_bytes(bytes(data))
    elif damage == "truncate":
        target.write_bytes(target.read_bytes()[:-10])
    elif damage == "delete":
        target.unlink()
    elif damage == "format":
        m = json.loads((art / "manifest.json").read_text()); m["format"] = "other/9"
        (art / "manifest.json").write_text(json.dumps(m))
    else:
        (art / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match=message):
        load_artifacts(art, into=tmp_path / "unpacked")
    assert not (tmp_path / "unpacked").exists()                           # nothing half-unpacked
    if damage in ("flip", "truncate", "delete"):
        with pytest.raises(ArtifactError, match="step_0000020"):
            verify_artifacts(art)


@pytest.mark.parametrize("damage, message", [
    ("manifest_text", "corrupt"), ("outside", "not a plain relative path"), ("pickle", "cannot be read as a .safetensors"),
    ("entry", "not a file's description"),
])
def test_foreign_or_tampered_artifact_folders_are_refused_with_one_line(finished_run, tmp_path, damage, message):
    """Issue 37 item 4: a manifest that is not JSON, one that points outside its folder (unpacking would copy a file
    from there), a checkpoint replaced by a pickle with the manifest made to match, an entry that is not a file's
    description: each an ArtifactError naming what is wrong (no traceback), and nothing unpacked."""
    import hashlib
    art = tmp_path / "a"
    export_artifacts(finished_run, art)
    mf = art / "manifest.json"
    m = json.loads(mf.read_text())
    if damage == "manifest_text":
        mf.write_text(mf.read_text()[:-40])
    elif damage == "outside":
        secret = tmp_path / "secret.txt"
        secret.write_text("not part of the artifacts")
        m["files"]["../secret.txt"] = {"bytes": secret.stat().st_size,
                                       "sha256": hashlib.sha256(secret.read_bytes()).hexdigest()}
        mf.write_text(json.dumps(m))
    elif damage == "pickle":
        rel = "checkpoints/step_0000020.safetensors"
        torch.save({"embed.W_E": torch.zeros(3, 3)}, art / rel)
        data = (art / rel).read_bytes()
        m["files"][rel].update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
        mf.write_text(json.dumps(m))
    else:
        m["files"]["llc/llc.parquet"] = "yes"
        mf.write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match=message) as e:
        load_artifacts(art, into=tmp_path / "unpacked")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "unpacked").exists()


def test_export_refuses_what_it_cannot_do(finished_run, tmp_path):
    from serpent.config import get_preset
    from serpent.rundir import Run
    with pytest.raises(ArtifactError, match="over the 0.01 MB limit.*largest"):
        export_artifacts(finished_run, tmp_path / "big", max_mb=0.01)
    assert not (tmp_path / "big").exists() and not (tmp_path / "big.partial").exists()
    with pytest.raises(ArtifactError, match="no checkpoint at steps \\[7\\]"):
        export_artifacts(finished_run, tmp_path / "x", checkpoints=[7])
    with pytest.raises(ArtifactError, match="no checkpoints yet"):
        export_artifacts(Run.create(tmp_path / "empty", get_preset("tiny")), tmp_path / "y")
    with pytest.raises(SerpentError, match="not a run directory"):
        export_artifacts(tmp_path / "nothing", tmp_path / "z")


def test_export_that_fails_midway_leaves_nothing_behind(finished_run, tmp_path, monkeypatch):
    import serpent.checkpoints
    from serpent.errors import CheckpointError

    def corrupt(*a, **k):
        raise CheckpointError("step_0000020.safetensors is corrupt")
    export_artifacts(finished_run, tmp_path / "a")                      # an earlier, good export stays intact
    before = json.loads((tmp_path / "a" / "manifest.json").read_text())
    monkeypatch.setattr(serpent.checkpoints, "load_checkpoint", corrupt)
    with pytest.raises(CheckpointError, match="corrupt"):
        export_artifacts(finished_run, tmp_path / "a")
    assert not (tmp_path / "a.partial").exists()
    assert verify_artifacts(tmp_path / "a") == before


def test_cli_export(finished_run, tmp_path, capsys):
    from serpent.cli import main
    assert main(["export", str(finished_run.path), "--out", str(tmp_path / "a"), "--no-charts"]) == 0
    assert "artifacts written to" in capsys.readouterr().out
    assert not any(p.suffix == ".png" for p in (tmp_path / "a").rglob("*"))
    assert main(["export", str(finished_run.path), "--out", str(tmp_path / "b"), "--max-mb", "0.001"]) == 2
    assert "over the 0.001 MB limit" in capsys.readouterr().err


@pytest.fixture
def http_folder():
    """Serve a folder over HTTP on the loopback interface (the hub and GitHub's raw files, without the network)."""
    import functools
    import http.server
    import threading
    servers = []

    def serve(folder):
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
        handler.log_message = lambda *a, **k: None
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"
    yield serve
    for server in servers:
        server.shutdown()


def test_fetch_downloads_checks_and_loads_published_artifacts(finished_run, tmp_path, http_folder):
    from serpent.artifacts import fetch_artifacts
    published = tmp_path / "repo" / "artifacts"
    m = export_artifacts(finished_run, published / "full", checkpoints=[0, 20])
    url = http_folder(tmp_path / "repo") + "/artifacts/full"
    colab = tmp_path / "content"                                          # a fresh machine: the package, no repo
    dest = fetch_artifacts(url, root=colab, progress=False)
    assert dest == colab / "artifacts" / "full" and verify_artifacts(dest) == m
    assert sorted(p.relative_to(colab) for p in (colab / "artifacts").rglob("*") if p.is_file()) == \
        sorted(Path("artifacts/full") / rel for rel in [*m["files"], "manifest.json"])   # no staging left
    run = load_artifacts("full", root=colab)
    assert run.checkpoint_steps() == [0, 20]
    assert torch.equal(run.load_params(20)["blocks.1.attn.W_Q"],
                       load_artifacts(published / "full", into=tmp_path / "u").load_params(20)["blocks.1.attn.W_Q"])
    # fetching again reuses the local copy (nothing rewritten); other artifacts under that name are never replaced
    stamp = (dest / "config.json").stat().st_mtime_ns
    assert fetch_artifacts(url, root=colab, progress=False) == dest
    assert (dest / "config.json").stat().st_mtime_ns == stamp
    export_artifacts(finished_run, published / "other", checkpoints=[0])
    with pytest.raises(ArtifactError, match="already holds other artifacts"):
        fetch_artifacts(url.replace("/full", "/other"), "full", root=colab, progress=False)
    assert verify_artifacts(dest) == m
    # file:// addresses work the same (a mounted drive, a downloaded copy)
    assert fetch_artifacts((published / "full").as_uri(), "copy", root=colab, progress=False) == colab / "artifacts" / "copy"


@pytest.mark.parametrize("problem, message", [
    ("absent", "no artifact folder at .*HTTP 404"),
    ("not_json", "not a JSON manifest"),
    ("foreign", "format 'other/9'"),
    ("escape", "not a plain relative path"),
    ("changed", "does not match its size and sha256"),
    ("longer", "larger than the"),
])
def test_fetch_refuses_bad_published_folders_and_leaves_nothing(finished_run, tmp_path, http_folder, problem, message):
    from serpent.artifacts import fetch_artifacts
    art = tmp_path / "repo" / "full"
    export_artifacts(finished_run, art, checkpoints=[20])
    manifest = json.loads((art / "manifest.json").read_text())
    target = art / "susceptibility" / "step_0000020.safetensors"
    if problem == "absent":
        art = art.with_name("missing")
    elif problem == "not_json":
        (art / "manifest.json").write_bytes(b"<html>404</html>")
    elif problem == "foreign":
        manifest["format"] = "other/9"
    elif problem == "escape":
        manifest["files"]["../../evil.txt"] = manifest["files"]["config.json"]
    elif problem == "changed":
        data = bytearray(target.read_bytes()); data[-1] ^= 0xFF; target.write_bytes(bytes(data))
    else:
        target.write_bytes(target.read_bytes() + b"extra")
    if problem in ("foreign", "escape"):
        (art / "manifest.json").write_text(json.dumps(manifest))
    url = http_folder(tmp_path / "repo") + "/" + art.name
    with pytest.raises(ArtifactError, match=message):
        fetch_artifacts(url, "full", root=tmp_path / "content", progress=False)
    left = [p for p in (tmp_path / "content").rglob("*") if p.is_file()]
    assert left == [] and not (tmp_path / "content" / "artifacts" / "full").exists()
    assert not (tmp_path / "evil.txt").exists()


def test_course_run_fetches_the_full_run_only_online_and_falls_back_to_tiny(finished_run, tmp_path, monkeypatch,
                                                                             capsys):
    from serpent.course import course_run, default_preset, published_artifacts_url
    export_artifacts(finished_run, tmp_path / "repo" / "artifacts" / "full")
    url = (tmp_path / "repo" / "artifacts").as_uri()
    root = tmp_path / "content"
    root.mkdir()
    monkeypatch.setenv("SERPENT_ARTIFACTS_URL", url)
    monkeypatch.delenv("SERPENT_ONLINE", raising=False)
    monkeypatch.delenv("SERPENT_FAST", raising=False)
    assert published_artifacts_url() is None                             # offline by default: nothing is fetched
    with pytest.raises(SerpentError, match="tiny"):
        course_run(root=root, compute=False)
    assert not (root / "artifacts").exists()
    monkeypatch.setenv("SERPENT_FAST", "1")                               # never in fast mode (tests, CI, book build)
    monkeypatch.setenv("SERPENT_ONLINE", "1")
    assert published_artifacts_url() is None
    monkeypatch.setenv("SERPENT_FAST", "0")
    assert published_artifacts_url() == url
    run = course_run(root=root, compute=False, progress=False)
    assert run.path == root / "runs" / "full-artifacts" and default_preset(root) == "full"
    assert "fetched the full run's results" in capsys.readouterr().out
    # a published folder that is not there: the notebook says why and goes on with tiny
    monkeypatch.setenv("SERPENT_ARTIFACTS_URL", (tmp_path / "nowhere").as_uri())
    with pytest.raises(SerpentError, match="tiny"):
        course_run(root=tmp_path / "other", compute=False, progress=False)
    assert "could not be fetched" in capsys.readouterr().out


def test_cli_fetch(finished_run, tmp_path, capsys):
    from serpent.cli import main
    export_artifacts(finished_run, tmp_path / "pub" / "full", checkpoints=[20])
    assert main(["fetch", (tmp_path / "pub" / "full").as_uri(), "--root", str(tmp_path / "r")]) == 0
    assert "load_artifacts(" in capsys.readouterr().out and (tmp_path / "r" / "artifacts" / "full").is_dir()
    assert main(["fetch", (tmp_path / "pub" / "none").as_uri(), "--root", str(tmp_path / "r")]) == 2
    assert "no artifact folder at" in capsys.readouterr().err


def test_gpu_session_helpers_order_steps_and_pack_parts(tmp_path, monkeypatch):
    import importlib.util
    import tarfile
    from pathlib import Path
    spec = importlib.util.spec_from_file_location("gpu_session", Path(__file__).parents[1] / "bench" / "gpu_session.py")
    gs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gs)
    for n in (1, 2, 3, 12, 97):
        steps = [s * 10 for s in range(n)]
        order = gs.coarse_to_fine(steps)
        assert sorted(order) == steps and order[0] == steps[0] and (n == 1 or order[1] == steps[-1])
    assert gs.coarse_to_fine(list(range(9)))[:3] == [0, 8, 4]
    src = tmp_path / "art"
    src.mkdir()
    (src / "a.bin").write_bytes(np.random.default_rng(0).bytes(300_000))         # incompressible
    monkeypatch.setattr(gs, "PART_BYTES", 100_000)
    parts = gs.pack(src, tmp_path / "out", "full")
    assert len(parts) == 4 and all((tmp_path / "out" / p).stat().st_size <= 100_000 for p in parts)
    joined = tmp_path / "joined.tgz"
    joined.write_bytes(b"".join((tmp_path / "out" / p).read_bytes() for p in parts))
    with tarfile.open(joined) as tar:
        tar.extractall(tmp_path / "back", filter="data")
    assert (tmp_path / "back" / "full" / "a.bin").read_bytes() == (src / "a.bin").read_bytes()
    # the watchdog interrupts whatever runs when the deadline's reserve is reached, and can be disarmed
    import time
    gs.arm_watchdog(0.2)
    t = time.time()
    with pytest.raises(gs.TimeUp):
        while time.time() - t < 5:
            sum(range(1000))
    assert 0.15 < time.time() - t < 2
    gs.arm_watchdog(0.2)
    gs.arm_watchdog(0)
    time.sleep(0.4)                                                              # disarmed: nothing is raised
    with pytest.raises(gs.TimeUp):                                               # a deadline already passed
        gs.arm_watchdog(-5.0)                                                    # rings at once, not never
        time.sleep(1)


def test_committed_artifacts_verify_load_and_match_their_manifest(tmp_path):
    """Every committed artifact folder passes its manifest and loads; the README says which exist."""
    from pathlib import Path
    from serpent.stages import load_susceptibilities
    root = Path(__file__).resolve().parents[1]
    folders = sorted(p.parent for p in (root / "artifacts").glob("*/manifest.json"))
    readme = (root / "README.md").read_text()
    if not folders:
        assert "No artifacts are committed yet" in readme           # the README must not promise what is absent
        return
    assert "No artifacts are committed yet" not in readme
    for folder in folders:
        m = verify_artifacts(folder)
        assert m["total_bytes"] <= 40e6 and m["corpus"] and m["versions"] and m["hardware"]
        run = load_artifacts(folder, into=tmp_path / folder.name)
        for step in m["checkpoints"]:
            params = run.load_params(step)                          # names and shapes checked against the config
            assert all(torch.isfinite(p).all() for p in params.values())
        for step, r in load_susceptibilities(run).items():
            declared = m["files"][f"susceptibility/step_{step:07d}.safetensors"]["tensors"]["chi"]["shape"]
            assert list(r.chi.shape) == declared and np.isfinite(r.chi).all()


def test_commit_falls_back_to_the_environment_without_git(monkeypatch):
    """A GPU machine gets a copy of the work tree without .git: the commit then comes from $SERPENT_COMMIT."""
    import subprocess
    from serpent import artifacts
    assert artifacts._git_commit()                       # this checkout is a git repository
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 128, "", "not a repo"))
    monkeypatch.delenv("SERPENT_COMMIT", raising=False)
    assert artifacts._git_commit() is None
    monkeypatch.setenv("SERPENT_COMMIT", "abc1234")
    assert artifacts._git_commit() == "abc1234"


def test_gpu_session_end_to_end_then_a_second_call_fills_in_and_reexports(tmp_path, micro_run_config):
    """bench/gpu_session.py as the GPU machine runs it (a subprocess, code from the work tree): every stage, the
    packed parts load back here; a second call (--skip train) reuses every checkpoint's result; a machine without
    the run directory stops at once."""
    import subprocess
    import sys
    from pathlib import Path
    from serpent.artifacts import load_artifacts
    cfg = micro_run_config.with_overrides(
        llc={"sampler.checkpoints": 3, "sampler.chains": 1, "sampler.draws": 4, "sampler.batch_size": 2},
        susceptibility={"probe_sequences": 2, "probe_length": 32, "sampler.chains": 1, "sampler.draws": 4,
                        "sampler.batch_size": 2, "sampler.checkpoints": 2})
    (tmp_path / "cfg.json").write_text(json.dumps(cfg.to_dict()))
    root = Path(__file__).parents[1]
    env = {**os.environ, "SERPENT_COMMIT": "0123abc", "PYTHONPATH": str(root), "HF_HUB_OFFLINE": "1"}

    def session(*extra, out="out"):
        cmd = [sys.executable, str(root / "bench" / "gpu_session.py"), "--config", str(tmp_path / "cfg.json"),
               "--out", str(tmp_path / "run"), "--export", str(tmp_path / out), "--deadline", "300",
               "--reserve", "20", "--keep-checkpoints", "10", *extra]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
        log = json.loads((tmp_path / out / "session.json").read_text())
        return proc, log

    proc, log = session()
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    stages = log["stages"]
    assert not [k for k, v in stages.items() if "error" in v], stages
    assert {"data", "train", "induction", "llc", "susceptibility", "export"} <= set(stages) and not log["skipped"]
    llc_steps = [k for k in stages if k.startswith("llc@")]
    assert len(llc_steps) == 3 and len([k for k in stages if k.startswith("susceptibility@")]) == 2
    # the parts reassemble into an artifact folder that loads here
    (tmp_path / "here" / "artifacts").mkdir(parents=True)
    joined = tmp_path / "full.tgz"
    joined.write_bytes(b"".join((tmp_path / "out" / p).read_bytes() for p in log["parts"]))
    with tarfile.open(joined) as tar:
        tar.extractall(tmp_path / "here" / "artifacts", filter="data")
    manifest = json.loads((tmp_path / "here" / "artifacts" / "full" / "manifest.json").read_text())
    assert manifest["commit"] in ("0123abc", subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True,
                                                            text=True, cwd=root).stdout.strip())
    run = load_artifacts("full", root=tmp_path / "here")
    assert run.checkpoint_steps() == [10, 30] and len(pd.read_parquet(run.path / "llc" / "llc.parquet")) == 3
    assert len(list((run.path / "susceptibility").glob("step_*.safetensors"))) == 2

    # the second call on the same machine: nothing is estimated again, the export is redone
    proc2, log2 = session("--skip", "train", out="out2")
    assert proc2.returncode == 0, proc2.stderr[-3000:]
    def computed(entry) -> int:   # llc_stage counts the checkpoints it estimated, susceptibility_stage lists them
        c = entry["summary"].get("computed", 0)
        return c if isinstance(c, int) else len(c)

    again = {k: computed(v) for k, v in log2["stages"].items() if k.startswith(("llc@", "susceptibility@"))}
    assert set(again) == {k for k in stages if k.startswith(("llc@", "susceptibility@"))}
    assert all(computed(stages[k]) == 1 for k in again) and not any(again.values()), (again, stages)
    assert "train" not in log2["stages"] and log2["parts"]
    # a fresh machine (no run directory) with --skip train: stops at once, says why
    proc3 = subprocess.run([sys.executable, str(root / "bench" / "gpu_session.py"), "--config",
                            str(tmp_path / "cfg.json"), "--out", str(tmp_path / "elsewhere"), "--skip", "train",
                            "--export", str(tmp_path / "out3")], capture_output=True, text=True, env=env, timeout=300)
    assert proc3.returncode == 1 and "nothing to do" in proc3.stdout


def test_export_keeps_the_stage_labels_and_a_changed_classifier_does_not_relabel(finished_run, tmp_path,
                                                                                   monkeypatch):
    """Issue 35 item 1: the export keeps the labels the serpent stage computed (map.parquet: pattern,
    n_prev_spaces), and the unpacked run uses them, whatever classifier the reader's serpent.patterns has."""
    import serpent.patterns as patterns
    from serpent import artifacts
    from serpent.outputs import MAP, MAP_COLUMNS

    stored = pd.read_parquet(finished_run.path / "serpent" / "embedding.parquet")
    assert (stored["pattern"].astype(str) != "other").any()          # the stage's labels are not all "other"
    folder = tmp_path / "art"
    m = export_artifacts(finished_run, folder)
    assert list(pd.read_parquet(folder / "serpent" / "map.parquet").columns) == list(MAP_COLUMNS)
    assert "serpent/map.parquet" in m["files"]
    # a reader with another classifier: every token "other", no spaces counted
    monkeypatch.setattr(patterns, "classify_tokens", lambda strs, **kw: ["other"] * len(strs))
    monkeypatch.setattr(patterns, "n_prev_spaces", lambda strs: [0] * len(strs))
    run = load_artifacts(folder, into=tmp_path / "unpacked")
    got = pd.read_parquet(run.path / "serpent" / "embedding.parquet")
    pd.testing.assert_series_equal(got["pattern"], stored["pattern"])
    pd.testing.assert_series_equal(got["n_prev_spaces"], stored["n_prev_spaces"])
    assert list(got.columns) == list(stored.columns)
    # an older folder, whose map holds only the coordinates, is labelled by this version's classifier (it loads)
    old_map = MAP.read(folder)[["step", "point", "x", "y"]]
    relabelled = artifacts._labels(run, old_map)
    assert (relabelled["pattern"].astype(str) == "other").all()
