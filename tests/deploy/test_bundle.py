"""The modules as SeedFarmer really runs them: its bundle layout, its variables, the deployspec.

SeedFarmer (seed-farmer 8: seedfarmer/deployment/deploy_remote.py and deploy_local.py, with
seedfarmer/mgmt/bundle.py) copies the module's directory to ``bundle/module/`` (hidden files and
build directories left out), copies every ``dataFiles`` entry, which must be a file, to
``bundle/module/<its path>``, sets ``SEEDFARMER_*`` variables (deploy_base.py ``_env_vars``) and
runs each deployspec phase after ``cd ${CODEBUILD_SRC_DIR}/bundle`` and ``cd module/``. These tests
do the same in a temporary directory, with the sample manifest of each module's README, and run
the deploy and destroy phases with stand-ins for cdk, docker, aws, npm, pip and seedfarmer that
record what they are asked (the cdk stand-in really synthesizes the app).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from common.bundle import data_files
from common.image import copied_sources

from tests.deploy.conftest import (
    ACCOUNT,
    ADMIN_ROLE,
    BOUNDARY,
    BUCKET,
    HANDLER_ROLE,
    ISSUER,
    OIDC_ARN,
    OPERATOR_DIR,
    ORCHESTRATOR_DIR,
    REGION,
    ROOT,
    AwsAuthCluster,
    resolve_join,
)

pytestmark = pytest.mark.slow
MODULE_DIRS = {"ray-operator": OPERATOR_DIR, "ray-orchestrator": ORCHESTRATOR_DIR}
GROUP = "ray"
PROJECT, DEPLOYMENT = "idf", "dev"
CA = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0t"
# seed-farmer's seedfarmer/mgmt/bundle.py: what of a module directory stays out of the bundle.
IGNORED = ("/build/", "/.mypy_cache/", ".egg-info", "__pycache__", "/.seedfarmer.out/", "/dist/",
           "/node_modules/", "/cdk.out/")


def sample_manifest(module: str) -> dict[str, Any]:
    """The module manifest of the README's "Sample manifest declaration"."""
    text = (MODULE_DIRS[module] / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)
    (manifest,) = [yaml.safe_load(b) for b in blocks if b.startswith(f"name: {module}\n")]
    assert manifest["path"] == f"deploy/aws/modules/{module}"
    result: dict[str, Any] = manifest
    return result


def upper_snake(name: str) -> str:
    """seed-farmer's upper_snake_case of a PascalCase parameter name."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper()


def metadata_values(endpoint: str, ca_data: str) -> dict[tuple[str, str, str], str]:
    """What the sample manifests' moduleMetadata references resolve to (the core EKS module's
    outputs and the others'), by (group, name, key)."""
    eks = {
        "EksClusterMasterRoleArn": ADMIN_ROLE,
        "EksHandlerRoleArn": HANDLER_ROLE,
        "EksClusterName": "eks-dev",
        "EksClusterEndpoint": endpoint,
        "EksOidcArn": OIDC_ARN,
        "EksClusterOpenIdConnectIssuer": f"https://{ISSUER}",
        "EksClusterCertAuthData": ca_data,
        "EksClusterSecurityGroupId": "sg-0123456789abcdef0",
    }
    return {
        **{("core", "eks", key): value for key, value in eks.items()},
        ("base", "buckets", "ArtifactsBucketName"): BUCKET,
        ("integration", "lustre-on-eks", "PersistentVolumeClaimName"): "fsx-lustre-claim",
    }


PROJECT_PARAMETERS = {"rayNamespaceName": "ray", "draExportPath": "/ray/export/"}


def seedfarmer_variables(
    module: str, manifest: dict[str, Any], *, endpoint: str, ca_data: str
) -> dict[str, str]:
    """The variables SeedFarmer gives the module's CodeBuild run (publishGenericEnvVariables)."""
    values = metadata_values(endpoint, ca_data)
    env = {
        "SEEDFARMER_PROJECT_NAME": PROJECT,
        "SEEDFARMER_DEPLOYMENT_NAME": DEPLOYMENT,
        "SEEDFARMER_MODULE_NAME": f"{GROUP}-{module}",
        "SEEDFARMER_MODULE_METADATA": "",
        "SEEDFARMER_HASH": "1a2b3c4d",
        "SEEDFARMER_PERMISSIONS_BOUNDARY_ARN": BOUNDARY,
        "SEEDFARMER_VERSION": "8.0.0",
        "AWS_PARTITION": "aws",
        # CodeBuild's own, and the seedkit project's.
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_ACCOUNT_ID": ACCOUNT,
    }
    for parameter in manifest["parameters"]:
        source = parameter.get("valueFrom", {})
        if "moduleMetadata" in source:
            ref = source["moduleMetadata"]
            value = values[(ref["group"], ref["name"], ref["key"])]
        elif "parameterValue" in source:
            value = PROJECT_PARAMETERS[source["parameterValue"]]
        else:
            value = str(parameter["value"])
        env[f"SEEDFARMER_PARAMETER_{upper_snake(parameter['name'])}"] = value
    return env


def build_bundle(module: str, manifest: dict[str, Any], where: Path) -> Path:
    """``bundle/module`` as SeedFarmer makes it: the module's files, then the dataFiles in it."""
    source = MODULE_DIRS[module]
    target = where / "bundle" / "module"
    for path in source.rglob("*"):
        relative = "/" + path.relative_to(source).as_posix()
        if not path.is_file() or any(word in relative for word in IGNORED):
            continue
        if path.name.startswith(".") and path.name != ".python-version":
            continue
        (target / relative[1:]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target / relative[1:])
    for entry in manifest["dataFiles"]:
        data = ROOT / entry["filePath"]
        # SeedFarmer refuses the deployment ("Missing DataFiles") for a path that is no file.
        assert data.is_file(), f"dataFiles entry {entry['filePath']} is not a file"
        (target / entry["filePath"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(data, target / entry["filePath"])
    return target


# --- stand-ins for the tools the deployspec calls ------------------------------------------------

RECORD = """
import json, os, sys
with open(os.environ["STUB_LOG"], "a") as log:
    log.write(json.dumps({"tool": TOOL, "args": sys.argv[1:], "cwd": os.getcwd()}) + "\\n")
"""

CDK = '''
import json, os, shlex, subprocess, sys, tempfile
from pathlib import Path

args = sys.argv[1:]
action = args[0]
app = args[args.index("--app") + 1]
# cdk sets these from the credentials before it runs the app.
env = {**os.environ, "CDK_DEFAULT_ACCOUNT": os.environ["AWS_ACCOUNT_ID"],
       "CDK_DEFAULT_REGION": os.environ["AWS_DEFAULT_REGION"]}
outdir = tempfile.mkdtemp(dir=os.environ["STUB_DIR"], prefix=f"cdk.out.{action}.")
env["CDK_OUTDIR"] = outdir
subprocess.run(shlex.split(app), env=env, check=True)
manifest = json.loads(Path(outdir, "manifest.json").read_text())
stacks = {name: a for name, a in manifest["artifacts"].items()
          if a["type"] == "aws:cloudformation:stack"}
skip = {"--app", "--outputs-file", "--progress", "--require-approval"}
named, i = [], 1
while i < len(args):
    if args[i] in skip:
        i += 2
        continue
    if not args[i].startswith("-"):
        named.append(args[i])
    i += 1
chosen = sorted(stacks) if "--all" in args else named
for name in chosen:
    assert name in stacks, f"cdk: no stack {name} in the app ({sorted(stacks)})"
with open(os.environ["STUB_LOG"], "a") as log:
    log.write(json.dumps({"tool": "cdk-stacks", "args": chosen, "cwd": outdir}) + "\\n")
if "--outputs-file" in args:
    def resolve(value):
        if isinstance(value, str):
            return value
        if "Fn::Join" in value:
            sep, parts = value["Fn::Join"]
            return sep.join(resolve(p) for p in parts)
        if "Fn::GetAtt" in value:
            return "<{}.{}>".format(*value["Fn::GetAtt"])
        return "<{}>".format(value["Ref"])
    outputs = {}
    for name in chosen:
        template = json.loads(Path(outdir, stacks[name]["properties"]["templateFile"]).read_text())
        outputs[name] = {k: resolve(v["Value"]) for k, v in template.get("Outputs", {}).items()}
    Path(args[args.index("--outputs-file") + 1]).write_text(json.dumps(outputs))
'''

AWS = '''
import json, os, sys
args = sys.argv[1:]
if args[:2] == ["ecr", "describe-images"]:
    sys.exit(1)  # the tag is not in the repository yet
if args[:2] == ["ecr", "get-login-password"]:
    print("password")
elif args[:2] == ["eks", "describe-cluster"]:
    print(os.environ["STUB_AUTHENTICATION_MODE"])
elif args[:2] == ["eks", "get-token"]:
    print(json.dumps({"status": {"token": os.environ["STUB_TOKEN"]}}))
'''

SEEDFARMER = '''
import json, os, sys
args = sys.argv[1:]
if args[:2] == ["metadata", "convert"]:
    key = "-".join(os.environ[f"SEEDFARMER_{k}"] for k in ("PROJECT_NAME", "DEPLOYMENT_NAME",
                                                             "MODULE_NAME"))
    outputs = json.load(open(args[args.index("-f") + 1]))
    open("SEEDFARMER_MODULE_METADATA", "w").write(outputs[key]["metadata"])
'''

DOCKER = '''
import sys
if sys.argv[1] == "login":
    assert sys.stdin.read().strip() == "password"
'''


def install_stubs(directory: Path) -> Path:
    """Executables named like the tools, first on the PATH; each appends its call to a log."""
    bin_dir = directory / "bin"
    bin_dir.mkdir(parents=True)
    bodies = {"cdk": CDK, "aws": AWS, "seedfarmer": SEEDFARMER, "docker": DOCKER, "npm": "",
              "pip": ""}
    for tool, body in bodies.items():
        script = bin_dir / tool
        script.write_text(f"#!{sys.executable}\nTOOL = {tool!r}\n{RECORD}\n{body}\n")
        script.chmod(0o755)
    return bin_dir


@dataclass
class Run:
    calls: list[dict[str, Any]]
    module_dir: Path

    def of(self, tool: str) -> list[list[str]]:
        return [c["args"] for c in self.calls if c["tool"] == tool]


def run_phases(
    spec: dict[str, Any], stage: str, module_dir: Path, env: dict[str, str], log: Path
) -> Run:
    """Each phase of ``stage`` as SeedFarmer's buildspec runs it (bash, from bundle/module)."""
    for phase in ("install", "pre_build", "build", "post_build"):
        commands = spec[stage]["phases"].get(phase, {}).get("commands", [])
        if not commands:
            continue
        script = "\n".join(['cd "${CODEBUILD_SRC_DIR}/bundle"', "cd module/", *commands])
        done = subprocess.run(
            ["bash", "-e", "-c", script], env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, f"{stage}/{phase} failed:\n{done.stdout}\n{done.stderr}"
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    log.write_text("")
    return Run(calls, module_dir)


def mapped_roles(cluster: AwsAuthCluster) -> str:
    config_map = cluster.config_map()
    assert config_map is not None
    roles: str = config_map["data"]["mapRoles"]
    return roles


def deployspec_env(
    module: str, bundle_root: Path, stubs: Path, server: AwsAuthCluster, mode: str
) -> dict[str, str]:
    manifest = sample_manifest(module)
    env = {
        key: value for key, value in os.environ.items()
        if not key.startswith(("SEEDFARMER_", "CDK_", "AWS_"))
    }
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(seedfarmer_variables(module, manifest, endpoint=server.endpoint,
                                    ca_data=server.ca_data))
    env.update({
        "PATH": f"{stubs}:{Path(sys.executable).parent}:{os.environ['PATH']}",
        "CODEBUILD_SRC_DIR": str(bundle_root),
        "STUB_DIR": str(stubs.parent),
        "STUB_LOG": str(stubs.parent / "calls.jsonl"),
        "STUB_AUTHENTICATION_MODE": mode,
        "STUB_TOKEN": server.token,
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
    })
    return env


def templates_of(run: Run, action: str) -> dict[str, dict[str, Any]]:
    """The templates the cdk stand-in synthesized for its last ``action`` call, by file name."""
    (outdir,) = [c["cwd"] for c in run.calls if c["tool"] == "cdk-stacks"
                 if Path(c["cwd"]).name.startswith(f"cdk.out.{action}.")][-1:]
    return {p.name: json.loads(p.read_text()) for p in Path(outdir).glob("*.template.json")}


@pytest.mark.parametrize("module", sorted(MODULE_DIRS))
def test_readme_data_files_are_what_the_module_needs(module: str) -> None:
    """Everything app.py reads and the image is built from, listed, as files, and nothing else."""
    listed = [entry["filePath"] for entry in sample_manifest(module)["dataFiles"]]
    needed = data_files(ROOT, module)
    missing, extra = sorted(set(needed) - set(listed)), sorted(set(listed) - set(needed))
    assert not missing and not extra, (
        f"README of {module}: add {missing}, remove {extra}"
        f" (python deploy/aws/common/bundle.py {module} prints the list)"
    )
    for source in copied_sources(ROOT / "Dockerfile"):  # what `docker build` will COPY
        assert any(path == source or path.startswith(source.rstrip("/") + "/") for path in listed)
    assert "Dockerfile" in listed and ".dockerignore" in listed


@pytest.mark.parametrize("module", sorted(MODULE_DIRS))
def test_deploy_and_destroy_run_in_the_seedfarmer_bundle(
    module: str, tmp_path: Path, aws_auth_cluster: AwsAuthCluster
) -> None:
    manifest = sample_manifest(module)
    module_dir = build_bundle(module, manifest, tmp_path)
    stubs = install_stubs(tmp_path / "stubs")
    spec = yaml.safe_load((module_dir / "deployspec.yaml").read_text())
    assert spec["publishGenericEnvVariables"] is True  # SEEDFARMER_ names, not <PROJECT>_ ones
    stack = f"{PROJECT}-{DEPLOYMENT}-{GROUP}-{module}"
    mine = {"rolearn": "placeholder", "username": "x", "groups": ["x"]}
    nodes = {"rolearn": f"arn:aws:iam::{ACCOUNT}:role/nodes", "username": "node", "groups": ["n"]}
    config_map = {"apiVersion": "v1", "kind": "ConfigMap",
                  "metadata": {"name": "aws-auth", "namespace": "kube-system"},
                  "data": {"mapRoles": yaml.safe_dump([nodes])}}
    # The sample core EKS module makes its cluster in CONFIG_MAP mode: aws-auth it is.
    server = aws_auth_cluster
    server.reset(config_map)
    env = deployspec_env(module, tmp_path, stubs, server, "CONFIG_MAP")
    log = Path(env["STUB_LOG"])
    log.write_text("")
    deploy = run_phases(spec, "deploy", module_dir, env, log)

    assert {c["cwd"] for c in deploy.calls if c["tool"] != "cdk-stacks"} == {str(module_dir)}
    (npm,) = deploy.of("npm")
    assert npm[:3] == ["install", "-g", npm[2]] and re.fullmatch(r"aws-cdk@\d+\.\d+\.\d+", npm[2])
    (pip,) = deploy.of("pip")
    assert pip == ["install", "-r", "requirements.txt"]
    assert (module_dir / "requirements.txt").is_file()
    # The repository's stack, the image pushed into it, then the module's stack only.
    order = [c["tool"] for c in deploy.calls if c["tool"] in ("cdk-stacks", "docker")]
    assert order == ["cdk-stacks", "docker", "docker", "docker", "cdk-stacks"]
    first, second = deploy.of("cdk-stacks")
    assert first == [f"{stack}-image"] and second == [stack]
    login, build, push = deploy.of("docker")
    image_outputs = json.loads((module_dir / "image-exports.json").read_text())
    image = image_outputs[f"{stack}-image"]["ImageUri"]
    assert login[:3] == ["login", "--username", "AWS"]
    assert login[-1] == image.split("/")[0]
    assert build == ["build", "--file", "Dockerfile", "--tag", image, "."]
    assert push == ["push", image]
    for source in copied_sources(module_dir / "Dockerfile"):  # the build context has them
        assert (module_dir / source).exists(), source
    # The module's stack runs exactly the image that was pushed.
    templates = templates_of(deploy, "deploy")
    main = templates[f"{stack}.template.json"]
    if module == "ray-operator":
        (chart,) = [r for r in main["Resources"].values()
                    if r["Type"] == "Custom::AWSCDK-EKS-HelmChart"]
        values = json.loads(chart["Properties"]["Values"])
        assert f"{values['image']['repository']}:{values['image']['tag']}" == image
    else:
        (machine,) = [r for r in main["Resources"].values()
                      if r["Type"] == "AWS::StepFunctions::StateMachine"]
        definition = json.loads(resolve_join(machine["Properties"]["DefinitionString"]))
        runners = {s["Parameters"]["Job"]["spec"]["template"]["spec"]["containers"][0]["image"]
                   for s in definition["States"].values() if "Job" in s.get("Parameters", {})}
        assert runners == {image}
    # The boundary, set as SeedFarmer sets it, on every role of every template.
    roles = [(f, n, r) for f, t in templates.items() for n, r in t["Resources"].items()
             if r["Type"] == "AWS::IAM::Role"]
    assert roles
    for file, name, role in roles:
        assert role["Properties"].get("PermissionsBoundary") == BOUNDARY, (file, name)
    # metadata convert found the stack's metadata under SeedFarmer's key.
    assert deploy.of("seedfarmer") == [["metadata", "convert", "-f", "cdk-exports.json"]]
    metadata = json.loads((module_dir / "SEEDFARMER_MODULE_METADATA").read_text())
    assert metadata["ImageUri"] == image
    assert metadata["EcrRepositoryName"] == stack
    if module == "ray-orchestrator":
        assert metadata["EksAccessMode"] == "aws_auth"
        assert not [n for t in templates.values() for n, r in t["Resources"].items()
                    if r["Type"] == "AWS::EKS::AccessEntry"]
        mine = {"rolearn": metadata["StateMachineRoleArn"],
                "username": metadata["KubernetesUsername"],
                "groups": [metadata["KubernetesGroup"]]}
        assert yaml.safe_load(mapped_roles(server)) == [nodes, mine]
        assert ["eks", "get-token", "--cluster-name", "eks-dev", "--role-arn", ADMIN_ROLE,
                "--output", "json"] in deploy.of("aws")

    # Destroy: SeedFarmer passes the deployed module's metadata in the environment.
    destroy_env = {**env, "SEEDFARMER_MODULE_METADATA": json.dumps(metadata)}
    destroy = run_phases(spec, "destroy", module_dir, destroy_env, log)
    (stacks,) = destroy.of("cdk-stacks")
    assert sorted(stacks) == sorted([stack, f"{stack}-image"])
    (cdk,) = destroy.of("cdk")
    assert cdk[:3] == ["destroy", "--force", "--all"]
    assert not destroy.of("docker")
    if module == "ray-orchestrator":
        assert yaml.safe_load(mapped_roles(server)) == [nodes]
        tools = [c["tool"] for c in destroy.calls]
        assert tools.index("aws") < tools.index("cdk")  # unmapped before the role goes


def test_orchestrator_exports_with_the_bundle_s_own_sources(tmp_path: Path) -> None:
    """app.py imports ray_operator from the bundle, not from an installed package."""
    module = "ray-orchestrator"
    module_dir = build_bundle(module, sample_manifest(module), tmp_path)
    code = "import app, ray_operator.pipelines.asl as asl; print(asl.__file__)"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=module_dir, capture_output=True, text=True, timeout=120,
        env={**os.environ, "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert Path(done.stdout.strip()) == module_dir / "src/ray_operator/pipelines/asl.py"


def test_app_finds_nothing_without_the_data_files(tmp_path: Path) -> None:
    """A bundle without deploy/aws/common (dataFiles left out) stops with a message, not an
    ImportError deep inside."""
    module_dir = build_bundle("ray-operator", {"dataFiles": []}, tmp_path)
    assert shlex.split("python app.py")  # as cdk runs it
    done = subprocess.run(
        [sys.executable, "app.py"], cwd=module_dir, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert "deploy/aws/common/ is neither in" in done.stderr and "dataFiles" in done.stderr
