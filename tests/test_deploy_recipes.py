"""The deployment recipes: docs/deploy-kuberay.md, docs/deploy-slurm.md and the files in
examples/deploy/ they walk through.  The manifests parse and have what KubeRay needs, the
batch scripts are valid bash, and every address and tunnel the docs tell users to type is
one shoal's address parser takes and points at the port the cluster opens.  No cluster and
no Ray: milliseconds.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from shoal.backends.ray.backend import ray_address
from shoal.core.backend import scheme_of

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "examples" / "deploy"
KUBERAY_DOC = ROOT / "docs" / "deploy-kuberay.md"
SLURM_DOC = ROOT / "docs" / "deploy-slurm.md"
DOCS = (KUBERAY_DOC, SLURM_DOC, ROOT / "docs" / "backends.md")
SBATCH = DEPLOY / "slurm" / "ray-cluster.sbatch"
CLIENT_PORT = 10001          # Ray Client's port, which every recipe uses

# What the docs tell users to type, wherever an address goes.
ADDRESS_FORMS = (r'shoal\.init\(address="([^"]+)"\)', r"SHOAL_ADDRESS=([^\s`]+)",
                 r"%cluster connect ([^\s`]+)")


def manifests() -> dict[Path, list[dict]]:
    return {path: [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
            for path in sorted(DEPLOY.rglob("*.yaml"))}


def of_kind(kind: str) -> list[dict]:
    found = [doc for docs in manifests().values() for doc in docs if doc["kind"] == kind]
    assert found, f"no {kind} in examples/deploy"
    return found


def containers(group: dict) -> list[dict]:
    return group["template"]["spec"]["containers"]


def ray_cluster() -> dict:
    (cluster,) = of_kind("RayCluster")
    return cluster


def all_groups(cluster: dict) -> list[dict]:
    return [cluster["spec"]["headGroupSpec"], *cluster["spec"]["workerGroupSpecs"]]


# ---- KubeRay ---------------------------------------------------------------------------------

def test_every_manifest_parses_into_named_kubernetes_objects():
    found = manifests()
    assert {p.name for p in found} >= {"raycluster.yaml", "client-service.yaml", "ingress-tls.yaml"}
    for path, docs in found.items():
        assert docs, f"{path} is empty"
        for doc in docs:
            assert {"apiVersion", "kind", "metadata"} <= doc.keys(), path
            assert doc["metadata"].get("name"), f"an object without a name in {path}"


def test_the_raycluster_has_a_head_worker_groups_and_the_client_port():
    cluster = ray_cluster()
    assert cluster["apiVersion"] == "ray.io/v1"
    head = cluster["spec"]["headGroupSpec"]
    workers = cluster["spec"]["workerGroupSpecs"]
    assert workers, "a RayCluster for shoal needs at least one worker group"
    for group in all_groups(cluster):
        # KubeRay's rayStartParams is map[string]string: a bare number fails validation.
        params = group["rayStartParams"]
        assert isinstance(params, dict)
        assert all(isinstance(v, str) for v in params.values()), params
        assert containers(group) and all(c.get("image") for c in containers(group))
    for group in workers:
        assert group["groupName"]
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], group
    head_ports = {p["containerPort"]: p.get("name") for c in containers(head) for p in c.get("ports", ())}
    assert head_ports.get(CLIENT_PORT) == "client", head_ports


def test_every_ray_container_runs_with_token_authentication_from_the_documented_secret():
    secrets = set()
    for group in all_groups(ray_cluster()):
        for container in containers(group):
            env = {e["name"]: e for e in container.get("env", ())}
            assert env["RAY_AUTH_MODE"]["value"] == "token", container["name"]
            ref = env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]   # never a literal token
            assert ref["key"] == "auth_token"
            secrets.add(ref["name"])
    (secret,) = secrets
    assert f"kubectl create secret generic {secret} --from-file=auth_token=" in KUBERAY_DOC.read_text()


def test_the_image_and_the_dockerfile_agree_on_rays_version():
    cluster = ray_cluster()
    version = cluster["spec"]["rayVersion"]
    base = re.search(r"^FROM rayproject/ray:(\S+)$", (DEPLOY / "kuberay" / "Dockerfile").read_text(), re.M)
    assert base and base.group(1).startswith(version + "-py"), base
    for group in all_groups(cluster):
        for container in containers(group):
            assert container["image"].endswith(":" + base.group(1)), container["image"]


def test_the_client_service_selects_the_head_and_exposes_only_the_client_port():
    (service,) = of_kind("Service")
    assert service["spec"]["selector"] == {"ray.io/cluster": ray_cluster()["metadata"]["name"],
                                           "ray.io/node-type": "head"}
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(CLIENT_PORT, CLIENT_PORT)]


def test_the_ingress_passes_tls_through_to_the_client_service_the_docs_connect_to():
    (ingress,) = of_kind("Ingress")
    (service,) = of_kind("Service")
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/ssl-passthrough"] == "true"
    (rule,) = ingress["spec"]["rules"]
    (path,) = rule["http"]["paths"]
    assert path["backend"]["service"] == {"name": service["metadata"]["name"],
                                          "port": {"number": CLIENT_PORT}}
    assert f'shoal.init(address="ray://{rule["host"]}:443")' in KUBERAY_DOC.read_text()


def test_port_forwards_lead_to_the_client_service_and_the_address_used():
    text = KUBERAY_DOC.read_text()
    (service,) = of_kind("Service")
    forwards = re.findall(r"kubectl port-forward service/(\S+) (\d+):(\d+)", text)
    assert forwards
    for name, local, remote in forwards:
        assert name == service["metadata"]["name"] and int(remote) == CLIENT_PORT
        assert f"ray://127.0.0.1:{local}" in text


# ---- Slurm -----------------------------------------------------------------------------------

def slurm_scripts() -> list[Path]:
    found = sorted(p for p in (DEPLOY / "slurm").iterdir() if p.suffix in (".sbatch", ".sh"))
    assert SBATCH in found
    return found


@pytest.mark.parametrize("script", slurm_scripts(), ids=lambda p: p.name)
def test_slurm_scripts_are_valid_bash(script):
    run = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr


@pytest.mark.parametrize("script", slurm_scripts(), ids=lambda p: p.name)
def test_slurm_scripts_pass_shellcheck(script):
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (scripts/system-deps.sh installs it as root)")
    run = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout


def test_sbatch_directives_come_before_the_first_command():
    # sbatch reads #SBATCH lines only until the first command: later ones are silently ignored.
    lines = SBATCH.read_text().splitlines()
    first_command = next(i for i, line in enumerate(lines)
                         if line.strip() and not line.lstrip().startswith("#"))
    assert any(line.startswith("#SBATCH") for line in lines[:first_command])
    assert not [line for line in lines[first_command:] if line.lstrip().startswith("#SBATCH")]


def test_the_sbatch_script_starts_ray_with_the_token_and_the_documented_client_port():
    script = SBATCH.read_text()
    assert re.search(r"^export RAY_AUTH_MODE=token$", script, re.M)
    assert f"CLIENT_PORT=${{CLIENT_PORT:-{CLIENT_PORT}}}" in script
    assert '--ray-client-server-port="$CLIENT_PORT"' in script
    assert "--dashboard-host=127.0.0.1" in script
    # What it writes for the notebook is an address shoal takes.
    template = re.search(r"^SHOAL_ADDRESS=(\S+)$", script, re.M).group(1)
    address = template.replace("$head_ip", "10.1.2.17").replace("$CLIENT_PORT", str(CLIENT_PORT))
    assert ray_address(address) == f"ray://10.1.2.17:{CLIENT_PORT}"


def test_the_sbatch_script_refuses_a_token_others_can_read(tmp_path):
    # (tests/test_deploy_slurm_script.py runs it for real, with Ray)
    token = tmp_path / "auth_token"
    token.write_text("x" * 64)
    token.chmod(0o644)
    venv = tmp_path / "env"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "activate").write_text("")
    run = subprocess.run(["bash", str(SBATCH)], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, SHOAL_ENV=str(venv), RAY_AUTH_TOKEN_PATH=str(token)))
    assert run.returncode == 1
    assert f"chmod 600 {token}" in run.stderr


def test_ssh_tunnels_lead_to_the_client_port_and_the_address_used():
    text = SLURM_DOC.read_text()
    tunnels = re.findall(r"ssh -N -L (\d+):(\S+):(\d+) ", text)
    assert tunnels
    for local, host, remote in tunnels:
        assert int(remote) == CLIENT_PORT
        assert f"ray://127.0.0.1:{local}" in text


# ---- both ------------------------------------------------------------------------------------

def test_every_address_the_docs_give_is_one_shoal_takes():
    addresses = [(doc.name, address) for doc in DOCS for form in ADDRESS_FORMS
                 for address in re.findall(form, doc.read_text())]
    assert len(addresses) >= 10, addresses
    for doc, address in addresses:
        assert scheme_of(address) == "ray", (doc, address)
        ray_address(address)             # raises ValueError for a malformed Ray address


def test_the_files_the_docs_name_exist_and_every_recipe_file_is_documented():
    text = "".join(doc.read_text() for doc in DOCS)
    named = set(re.findall(r"examples/deploy/[\w./-]*[\w-]", text))
    for path in named:
        assert (ROOT / path).exists(), f"the docs name {path}, which does not exist"
    for path in DEPLOY.rglob("*"):
        if path.is_file():
            relative = path.relative_to(ROOT).as_posix()
            assert relative in text or path.name in text, f"{relative} is in no recipe"
