"""Team use, for real on generated data: a shared DVC remote (push; a fresh clone pulls, reruns nothing and passes
CI's evaluation check) and a parameter sweep as queued DVC experiments, each one MLflow run in the project's own
store, tagged with its experiment; and what an edit of a network, the training schema or a figure makes stale. One
full pipeline run of two tiny models serves them all (two, so that an edit of one network's file can be seen to
leave the other's stages up to date)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import offline_params

from devtools import sweep
from devtools.demo import set_param_flags
from pipeline.tracking import runs as tracking

REPO = Path(__file__).resolve().parents[1]
# Variables DVC sets for the stages it runs: none may leak in from a shell that is itself inside a DVC run.
DVC_RUN_VARIABLES = ("DVC_ROOT", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV", "DVC_STAGE")
TINY_TRAIN = {"epochs": 2, "batch_size": 4, "optimizer": "adam", "lr": 0.003, "weight_decay": 0.0,
              "lr_schedule": "cosine", "warmup_epochs": 0, "crop_size": [48, 48], "scale_range": [0.75, 1.25],
              "workers": 0, "device": "cpu", "amp": False, "bn_momentum": 0.1}
CACHED_FILES = ("models/fcn/model.pt", "models/fcn/mlflow_run.json", "renders/compare.png")
CACHED_DIRS = ("data/prepared", "data/source", "data/SBD", "predictions/fcn", "renders/fcn")


def environment(tracking_uri: str | None) -> dict[str, str]:
    """The venv's `python` and `dvc` first on PATH (stage commands say `python`); MLflow at `tracking_uri`, or at
    the default store when None."""
    env = {key: value for key, value in os.environ.items()
           if key not in DVC_RUN_VARIABLES and key != "MLFLOW_TRACKING_URI"}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", DVC_NO_ANALYTICS="1")
    if tracking_uri is not None:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    return env


def run(cwd: Path, *command: str, env: dict[str, str]) -> str:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout}{result.stderr}"
    return result.stdout + result.stderr


def tree(root: Path) -> dict[str, bytes]:
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def team_project(tmp_path_factory, voc_tar, sbd_tgz, voc_tree) -> Path:
    """A git + DVC project holding the pipeline's code and definition, with the whole pipeline run once (a tiny FCN
    and a tiny U-Net on the generated archives) and committed with its lock file and metrics, on branch main."""
    root = tmp_path_factory.mktemp("team") / "project"
    for name in ("pipeline", "stages", "tools"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".gitignore"):
        shutil.copy(REPO / name, root / name)
    raw = offline_params(voc_tar, sbd_tgz)
    raw["train"].update(TINY_TRAIN)
    raw["models"] = {"fcn": {"architecture": "fcn", "options": {"variant": "fcn32s", "pretrained": "none"}},
                     "unet": {"architecture": "unet", "options": {"width": 4}, "train": {"epochs": 1}}}
    val_ids = (voc_tree / "VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt").read_text().split()
    raw["render"] = {"ids": val_ids[:2], "worst_k": 1}
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))

    env = environment(f"sqlite:///{root.parent / 'first-run-mlflow.db'}")
    run(root, "git", "init", "-q", "-b", "main", env=env)
    run(root, "git", "config", "user.name", "Team Test", env=env)
    run(root, "git", "config", "user.email", "team@example.invalid", env=env)
    run(root, "dvc", "init", "-q", env=env)
    run(root, "dvc", "repro", env=env)
    run(root, "git", "add", "-A", env=env)
    run(root, "git", "commit", "-qm", "pipeline, params, lock file and metrics", env=env)
    return root


def assert_same_outputs(clone: Path, project: Path) -> None:
    for path in CACHED_FILES:
        assert (clone / path).read_bytes() == (project / path).read_bytes(), path
    for path in CACHED_DIRS:
        assert tree(clone / path) == tree(project / path), path


def in_remote(remote: Path, md5: str) -> Path:
    return remote / "files" / "md5" / md5[:2] / md5[2:]


@pytest.mark.slow
def test_a_clone_pulls_from_the_shared_remote_reruns_nothing_and_passes_the_ci_check(team_project, tmp_path):
    project, remote, clone = team_project, tmp_path / "remote", tmp_path / "clone"
    env = environment(f"sqlite:///{tmp_path / 'ci-mlflow.db'}")
    run(project, "dvc", "remote", "add", "-d", "team", str(remote), env=env)
    run(project, "git", "commit", "-qam", "shared DVC remote", env=env)
    run(project, "dvc", "push", env=env)

    # Every cached output is in the remote, addressed by the md5 dvc.lock records; a directory as its manifest and
    # each file the manifest lists. Outputs with cache: false (metrics, curves) travel in git instead.
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    md5s = {out["path"]: out["md5"] for stage in lock["stages"].values() for out in stage.get("outs", [])}
    for path in CACHED_FILES:
        assert in_remote(remote, md5s[path]).read_bytes() == (project / path).read_bytes(), path
    for path in CACHED_DIRS:
        manifest = json.loads(in_remote(remote, md5s[path]).read_text())
        assert all(in_remote(remote, entry["md5"]).is_file() for entry in manifest), path
        assert len(manifest) == len(tree(project / path)), path
    assert not in_remote(remote, md5s["metrics/fcn.json"]).exists()

    # Another machine: clone, pull, and nothing is out of date, so nothing is trained or evaluated again.
    run(tmp_path, "git", "clone", "-q", str(project), str(clone), env=env)
    run(clone, "dvc", "pull", env=env)
    assert "Data and pipelines are up to date." in run(clone, "dvc", "status", env=env)
    assert "Running stage" not in run(clone, "dvc", "repro", env=env)
    assert_same_outputs(clone, project)

    # CI's step "Evaluate against the base branch (DVC remote configured)" (.github/workflows/evaluate.yml).
    forced = run(clone, "dvc", "repro", "--force", "--single-item", "--glob", "evaluate@*", env=env)
    assert forced.count("Running stage") == 2 and "Running stage 'evaluate@fcn'" in forced
    checked = run(clone, sys.executable, "-m", "tools.check_metrics", "--against", "origin/main", env=env)
    assert "metrics check passed" in checked
    assert (clone / "metrics/fcn.json").read_bytes() == (project / "metrics/fcn.json").read_bytes()


S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "team-test-key-id", "AWS_SECRET_ACCESS_KEY": "team-test-secret-key",
                  "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture
def s3_server(tmp_path):
    """A real S3 API on 127.0.0.1 (moto's server, a separate process) with one empty bucket; yields its URL."""
    import boto3  # the test extra's moto[server] brings it; dvc-s3 itself talks to S3 through s3fs

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url, log = f"http://127.0.0.1:{port}", tmp_path / "s3-server.log"
    with open(log, "wb") as out:
        server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p",
                                   str(port)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        client = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                              aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                              aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, log.read_text()
            try:
                client.create_bucket(Bucket="team-dvc")
                break
            except Exception:  # not listening yet
                assert time.monotonic() < deadline, f"the S3 server never answered: {log.read_text()}"
                time.sleep(0.3)
        yield url, client
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


@pytest.mark.slow
def test_d_the_remote_on_a_real_s3_api_shares_every_output_and_a_clone_reruns_nothing(team_project, s3_server,
                                                                                       tmp_path):
    project, clone = team_project, tmp_path / "clone"
    url, client = s3_server
    env = {**environment(f"sqlite:///{tmp_path / 'mlflow.db'}"), **S3_CREDENTIALS}
    # The commands docs/team.md shows: the bucket and endpoint committed, the credentials only in the environment.
    run(project, "dvc", "remote", "add", "s3team", "s3://team-dvc/voc-segmentation", env=env)
    run(project, "dvc", "remote", "modify", "s3team", "endpointurl", url, env=env)
    config = (project / ".dvc/config").read_text()
    assert url in config and not any(secret in config for secret in S3_CREDENTIALS.values())
    run(project, "git", "commit", "-qam", "DVC remote on S3", env=env)
    run(project, "dvc", "push", "-r", "s3team", env=env)

    lock = yaml.safe_load((project / "dvc.lock").read_text())
    md5s = {out["path"]: out["md5"] for stage in lock["stages"].values() for out in stage.get("outs", [])}
    keys = {item["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket="team-dvc")
            for item in page.get("Contents", [])}

    def key(md5: str) -> str:
        return f"voc-segmentation/files/md5/{md5[:2]}/{md5[2:]}"

    for path in CACHED_FILES:
        stored = client.get_object(Bucket="team-dvc", Key=key(md5s[path]))["Body"].read()
        assert stored == (project / path).read_bytes(), path
    for path in CACHED_DIRS:
        manifest = json.loads(client.get_object(Bucket="team-dvc", Key=key(md5s[path]))["Body"].read())
        assert len(manifest) == len(tree(project / path)) and {key(entry["md5"]) for entry in manifest} <= keys, path

    # Another machine with the same credentials: clone, pull from S3, nothing is out of date or run again.
    run(tmp_path, "git", "clone", "-q", str(project), str(clone), env=env)
    run(clone, "dvc", "pull", "-r", "s3team", env=env)
    assert "Data and pipelines are up to date." in run(clone, "dvc", "status", env=env)
    assert "Running stage" not in run(clone, "dvc", "repro", env=env)
    assert_same_outputs(clone, project)


def _is_dvc(pid: int) -> bool:
    try:
        return b"dvc" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def stop_queue(project: Path) -> None:
    """No queue worker or experiment outlives the test: stop the queue, then wait for the processes DVC started
    (it records each one's pid under .dvc/tmp/exps), killing any still there after a minute."""
    subprocess.run(["dvc", "queue", "stop", "--kill"], cwd=project, env=environment(None), capture_output=True)
    pids = set()
    for info in (project / ".dvc/tmp/exps").glob("*/**/*.json"):
        try:
            process = json.loads(info.read_text())
            pid, finished = process.get("pid"), process.get("returncode") is not None
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(pid, int) and not finished and _is_dvc(pid):
            pids.add(pid)
    deadline = time.monotonic() + 60
    while pids:
        for pid in list(pids):
            if not _is_dvc(pid):  # exited (a pid DVC recorded is never signalled once it is someone else's)
                pids.discard(pid)
            elif time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)


@pytest.mark.slow
def test_b_a_queued_sweep_is_one_mlflow_run_per_experiment_in_the_projects_store(team_project, monkeypatch):
    project = team_project
    for name in (*DVC_RUN_VARIABLES, "MLFLOW_TRACKING_URI"):  # the default store is what is tested
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    baseline = run(project, "git", "rev-parse", "HEAD", env=environment(None)).strip()
    grid = {"models.fcn.train.lr": [0.001, 0.005]}
    try:
        names = sweep.queue(grid, targets=sweep.targets_for(grid), cwd=project)
        assert len(names) == 2
        states = sweep.run_queued(names, cwd=project, timeout_s=300)
    finally:
        stop_queue(project)
    assert states == {name: "Success" for name in names}

    # dvc exp show: both experiments on the baseline, each with its learning rate and its own val mIoU.
    shown = json.loads(run(project, "dvc", "exp", "show", "--json", env=environment(None)))
    experiments = {}
    for entry in next(row for row in shown if row["rev"] == baseline)["experiments"] or []:
        data = entry["revs"][0]["data"]
        lr = data["params"]["params.yaml"]["data"]["models"]["fcn"]["train"]["lr"]
        experiments[entry["name"]] = (lr, data["metrics"]["metrics/fcn.json"]["data"]["miou"])
    assert sorted(experiments) == sorted(names)
    assert sorted(lr for lr, _ in experiments.values()) == [0.001, 0.005]

    # MLflow: the project's default store (mlflow.db at the DVC root, not in the experiments' deleted tempdirs)
    # holds one run per experiment, tagged with its name and baseline, with its lr, val metrics and model file.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project / tracking.DEFAULT_DB}")
    experiment = client.get_experiment_by_name("voc-segmentation")
    runs = [run for run in client.search_runs([experiment.experiment_id]) if run.data.tags.get("dvc_experiment")]
    assert sorted(run.data.tags["dvc_experiment"] for run in runs) == sorted(names)
    for found in runs:
        lr, miou = experiments[found.data.tags["dvc_experiment"]]
        assert found.info.status == "FINISHED"
        assert found.data.tags["dvc_baseline_rev"] == baseline
        assert float(found.data.params["train.lr"]) == lr
        assert found.data.metrics["val_miou"] == pytest.approx(miou, abs=1e-6)
        artifacts = Path(found.info.artifact_uri.removeprefix("file://"))
        assert artifacts.is_relative_to(project / tracking.DEFAULT_ARTIFACTS)
        assert any((artifacts / "model").rglob(tracking.MODEL_FILE))


def stale_stages(project: Path) -> set[str]:
    """The stages `dvc status` reports as changed."""
    result = subprocess.run(["dvc", "status", "--json"], cwd=project, env=environment(None), capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout))


@pytest.mark.slow
@pytest.mark.parametrize(("edited", "old", "new", "stale"), [
    # An overlay's colour (the render stages' pictures) changes no model and no metric.
    ("pipeline/reporting/draw.py", "ERROR_RGB = (255, 48, 48)", "ERROR_RGB = (255, 0, 0)",
     {"render@fcn", "render@unet", "compare"}),
    # The training curves' figure is drawn by render from the train stage's history.
    ("pipeline/reporting/figures.py", 'axes.set_xlabel("epoch")', 'axes.set_xlabel("epochs")',
     {"render@fcn", "render@unet", "compare"}),
    # The served model's request decoding is no stage's dependency.
    ("pipeline/serving/service.py", "base64-encoded", "base64 encoded", set()),
    # The exporter: the export alone (evaluate follows only if model.onnx comes out different); nothing retrains.
    ("pipeline/export/onnx_export.py", "IMAGES_PER_SIZE = 2", "IMAGES_PER_SIZE = 2  # edited",
     {"export@fcn", "export@unet"}),
    # A network's own file: its models are trained, exported and evaluated again (render follows once their outputs
    # change); the other architecture's model is left alone.
    ("pipeline/models/architectures/fcn.py", "class FCN32s(", "class FCN32s(  # edited\n",
     {"train@fcn", "export@fcn", "evaluate@fcn"}),
    ("pipeline/models/architectures/unet.py", "class UNet(", "class UNet(  # edited\n",
     {"train@unet", "export@unet", "evaluate@unet"}),
    # The training schema: every model trains again; no data stage reads it, so nothing is extracted or prepared.
    ("pipeline/core/params/train.py", "class TrainParams:", "class TrainParams:  # edited\n",
     {"train@fcn", "train@unet"}),
], ids=["overlay colour", "history figure", "request decoding", "exporter", "fcn's network", "unet's network",
        "training schema"])
def test_c_an_edit_reruns_only_the_stages_whose_outputs_it_can_change(team_project, edited, old, new, stale):
    path = team_project / edited
    original = path.read_text()
    before = stale_stages(team_project)
    assert old in original
    path.write_text(original.replace(old, new, 1))
    try:
        assert stale_stages(team_project) - before == stale
    finally:
        path.write_text(original)
    assert stale_stages(team_project) == before


def test_default_store_is_at_the_dvc_root(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    root = tmp_path / "checkout"
    monkeypatch.setenv("DVC_ROOT", str(root))  # a queued experiment runs in root/.dvc/tmp/exps/<tmp>
    assert tracking.tracking_uri() == f"sqlite:///{root.resolve() / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert tracking.tracking_uri() == "http://tracking.example:5000"


def test_provenance_tags_name_the_dvc_experiment_only_under_dvc_exp_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in DVC_RUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert not {"dvc_experiment", "dvc_baseline_rev"} & set(tracking.provenance_tags())  # plain `dvc repro`
    monkeypatch.setenv("DVC_EXP_NAME", "lucid-lamb")
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "0123abc")
    tags = tracking.provenance_tags()
    assert tags["dvc_experiment"] == "lucid-lamb" and tags["dvc_baseline_rev"] == "0123abc"


def test_sweep_sets_each_swept_key_once_and_reruns_only_the_swept_model():
    overrides = {"train": {"lr": 0.002, "epochs": 15}, "models": {"fcn": {"train": {"lr": 0.003}}}}
    grid = {"models.fcn.train.lr": [0.001, 0.004], "train.epochs": [1, 2]}
    flags = set_param_flags(sweep._without(overrides, grid)) + sweep.sweep_flags(grid)
    assert flags == ["-S", "++train.lr=0.002", "-S", "++models.fcn.train.lr=0.001,0.004",
                     "-S", "++train.epochs=1,2"]
    assert len(list(sweep.grid_points(grid))) == 4
    assert sweep.targets_for({"models.fcn.train.lr": [0.1]}) == ["render@fcn"]
    assert sweep.targets_for(grid) == []  # a shared key changes every model
    assert sweep.targets_for({"models.fcn.train.lr": [0.1], "models.unet.train.lr": [0.1]}) == []


def test_sweep_stops_before_queueing_when_a_stage_dependency_is_unknown_to_git(tmp_path):
    stages = {"train": {"cmd": "python -m stages.train", "deps": ["stages/train.py", "pipeline/new.py",
                                                                   "pipeline/staged.py", "data/prepared"]}}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    for name in ("stages/train.py", "pipeline/new.py", "pipeline/staged.py"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("")
    env = environment(None)
    run(tmp_path, "git", "init", "-q", env=env)
    run(tmp_path, "git", "add", "stages/train.py", "pipeline/staged.py", env=env)
    assert sweep.untracked_deps(tmp_path) == ["pipeline/new.py"]
