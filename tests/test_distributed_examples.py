"""examples/distributed: the Kubeflow TFJob and the Vertex AI worker pools run the script with
arguments it accepts, in roles its strategy has, and tell every task that an evaluator runs."""

from __future__ import annotations

import importlib.util
import os

import pytest

yaml = pytest.importorskip("yaml")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples", "distributed")
SCRIPT = "examples/distributed/train.py"
#: Vertex AI's worker pools, in the order it gives them their TF_CONFIG task types.
VERTEX_POOLS = ("chief", "worker", "ps", "evaluator")


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("distributed_train",
                                                  os.path.join(EXAMPLES, "train.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load(name: str):
    with open(os.path.join(EXAMPLES, name)) as handle:
        return yaml.safe_load(handle)


def _check_roles_and_command(script, roles: dict, containers: dict) -> None:
    """``roles``: task type -> replicas; ``containers``: task type -> (command, args, env)."""
    assert roles.get("chief") == 1, roles
    commands = {(tuple(c), tuple(a)) for c, a, _ in containers.values()}
    assert len(commands) == 1, "every task runs the same command"
    (command, args), = commands
    assert command == ("python", SCRIPT)
    assert os.path.exists(os.path.join(ROOT, command[1]))
    parsed = script.make_parser().parse_args(list(args))  # exits on an unknown argument
    assert set(roles) <= set(script.ROLES[parsed.strategy]), (parsed.strategy, roles)
    assert ("ps" in roles) == (parsed.strategy != "multi_worker_mirrored")
    assert all(count >= 1 for count in roles.values())
    for task_type, (_, _, env) in containers.items():
        variables = {e["name"]: e["value"] for e in env}
        # Both platforms leave the evaluator out of TF_CONFIG's cluster.
        assert variables.get("HEADKIT_EVALUATOR") == ("1" if "evaluator" in roles else None), (
            task_type)


def test_the_tfjob_runs_the_script_as_chief_worker_ps_and_evaluator(script):
    job = _load("tfjob.yaml")
    assert (job["apiVersion"], job["kind"]) == ("kubeflow.org/v1", "TFJob")
    replicas = job["spec"]["tfReplicaSpecs"]
    assert set(replicas) <= {"Chief", "Worker", "PS", "Evaluator"}
    roles = {name.lower(): spec["replicas"] for name, spec in replicas.items()}
    containers = {}
    for name, spec in replicas.items():
        container, = spec["template"]["spec"]["containers"]
        assert container["name"] == "tensorflow"  # the name the training operator looks for
        containers[name.lower()] = (container["command"], container["args"], container["env"])
    _check_roles_and_command(script, roles, containers)
    assert roles == {"chief": 1, "worker": 1, "ps": 1, "evaluator": 1}
    assert replicas["PS"]["restartPolicy"] == "Never"  # a lost ps fails the job (docs)


def test_the_vertex_ai_pools_run_the_script_in_their_order_of_roles(script):
    pools = _load("vertex_job.yaml")["workerPoolSpecs"]
    assert 1 <= len(pools) <= 4
    roles, containers = {}, {}
    for task_type, pool in zip(VERTEX_POOLS, pools):
        if not pool or not pool.get("replicaCount"):
            continue  # an empty pool: no task of that type
        roles[task_type] = pool["replicaCount"]
        spec = pool["containerSpec"]
        containers[task_type] = (spec["command"], spec["args"], spec["env"])
        assert pool["machineSpec"]["machineType"]
    _check_roles_and_command(script, roles, containers)
    assert roles["chief"] == 1 and roles.get("evaluator", 0) <= 1


def test_both_manifests_train_the_same_way(script):
    job = _load("tfjob.yaml")["spec"]["tfReplicaSpecs"]["Chief"]["template"]["spec"]
    pool = _load("vertex_job.yaml")["workerPoolSpecs"][0]["containerSpec"]
    parser = script.make_parser()
    on_kubernetes = vars(parser.parse_args(job["containers"][0]["args"]))
    on_vertex = vars(parser.parse_args(pool["args"]))
    assert {k: v for k, v in on_kubernetes.items() if k != "model_dir"} == {
        k: v for k, v in on_vertex.items() if k != "model_dir"}
