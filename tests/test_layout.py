"""The package layout: every import points down the floors (ground <- data <- env <- policies <- rollout <-
{trajectories, deploy, study} <- agent <- model_based <- CLIs), the module graph has no cycle, and package
faces are lazy. ``pytest -s tests/test_layout.py -k print`` prints the rooms, floors and arrows."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import mixagent

PKG = Path(mixagent.__file__).parent
GROUND = {"errors", "config", "paths", "domains", "sampling", "envs", "_lazy", "__init__"}
SIBLINGS = 5  # trajectories, deploy and study: one floor, and none imports another
FLOORS = {"data": 1, "env": 2, "policies": 3, "rollout": 4, "trajectories": SIBLINGS, "deploy": SIBLINGS,
          "study": SIBLINGS, "agent": 6, "model_based": 7, "cli": 8, "__main__": 8, "demo": 8, "train_agent": 8}
CLI = 8


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(dotted: str) -> bool:
    where = PKG.parent / dotted.replace(".", "/")
    return where.with_suffix(".py").is_file() or (where / "__init__.py").is_file()


def _imports() -> dict[str, set[str]]:
    """``{module: mixagent modules it imports}``, function-level (lazy) imports included."""
    graph: dict[str, set[str]] = {}
    for path in sorted(PKG.rglob("*.py")):
        name = _module_name(path)
        found = set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if node.level:  # relative: resolve against this module's package
                    base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    module = f"{base}.{module}" if module else base
                if not module.startswith("mixagent"):
                    continue
                found.add(module)
                # `from mixagent import agent` / `from . import x`: the names may be modules themselves
                found |= {f"{module}.{a.name}" for a in node.names if _is_module(f"{module}.{a.name}")}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("mixagent")}
        graph[name] = found - {name}
    return graph


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _floor(module: str) -> int:
    """A module's floor; every ``__main__`` is a command line (the top floor, whatever its room)."""
    if module.endswith(".__main__"):
        return CLI
    room = _room(module)
    return 0 if room in GROUND else FLOORS[room]


def test_every_module_lives_on_a_known_floor():
    unknown = sorted(m for m in _imports() if _room(m) not in GROUND and _room(m) not in FLOORS)
    assert not unknown, f"modules outside the layout (add them to a room): {unknown}"


def test_no_upward_import_and_siblings_stay_apart():
    bad = []
    for module, targets in _imports().items():
        for t in targets:
            if t == "mixagent":  # the package root only registers environments
                continue
            if _floor(t) > _floor(module) or (_floor(t) == _floor(module) == SIBLINGS
                                                and _room(t) != _room(module)):
                bad.append(f"{module} -> {t}")
    assert not bad, "imports that point up (or across trajectories/deploy/study):\n" + "\n".join(sorted(bad))


def test_deploy_never_imports_training_code():
    graph = _imports()
    bad = [f"{m} -> {t}" for m, ts in graph.items() if _room(m) == "deploy" and _floor(m) < CLI for t in ts
           if _room(t) in ("trajectories", "agent", "model_based")]
    assert not bad


def test_module_graph_has_no_cycle():
    imports = _imports()
    # a package's face re-exports its submodules lazily: an import of the face stands for all of them
    members = {m: {n for n in imports if n.startswith(m + ".")} for m in imports}
    members["mixagent"] = set()  # the root only registers environments and holds the version
    graph = {m: {u for t in ts if t in imports for u in ({t} | members[t]) - {m}} for m, ts in imports.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(t):] + [t]))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_package_faces_are_lazy_and_cheap():
    faces = ("import sys, mixagent, mixagent.agent, mixagent.policies, mixagent.env, mixagent.deploy, mixagent.study, "
             "mixagent.trajectories, mixagent.data, mixagent.rollout, mixagent.model_based, mixagent.cli; ")
    show = "print(sorted(m for m in sys.modules if m in {})); "
    heavy = {"torch", "d3rlpy", "transformers", "gymnasium", "mixagent.agent.train", "mixagent.policies.baselines"}
    loaded = subprocess.run([sys.executable, "-c", faces + show.format(heavy)], capture_output=True, text=True,
                            check=True).stdout.strip()
    assert loaded == "[]", f"importing the package faces loaded {loaded}"
    used = subprocess.run([sys.executable, "-c", faces + "from mixagent.policies import parse_baseline; "
                           + show.format(heavy)], capture_output=True, text=True, check=True).stdout.strip()
    assert used == "['mixagent.policies.baselines']"  # a name resolves to its module on first use


def test_face_names_stay_objects_after_their_modules_are_imported():
    """Importing ``pkg.sub`` sets ``pkg.sub`` to the module; a face export with a module's name would be
    shadowed by it, so no export may share a submodule's name."""
    code = ("import importlib, pkgutil, types, mixagent\n"
            "for m in pkgutil.walk_packages(mixagent.__path__, 'mixagent.'):\n"
            "    importlib.import_module(m.name)\n"
            "bad = []\n"
            "for face in ('agent', 'policies', 'env', 'deploy', 'study', 'trajectories', 'data', 'rollout',\n"
            "             'model_based'):\n"
            "    pkg = importlib.import_module('mixagent.' + face)\n"
            "    bad += [f'{face}.{n}' for n in pkg.__all__ if isinstance(getattr(pkg, n), types.ModuleType)]\n"
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out.splitlines()[-1] == "[]"


def room_arrows() -> dict[str, set[str]]:
    """``{room: rooms it imports}`` (command lines as the room ``cli``; the ground floor as ``ground``)."""
    def name(m: str) -> str:
        return "cli" if _floor(m) == CLI else "ground" if _floor(m) == 0 else _room(m)

    arrows: dict[str, set[str]] = {}
    for module, targets in _imports().items():
        arrows.setdefault(name(module), set()).update(
            name(t) for t in targets if t != "mixagent" and name(t) != name(module))
    return arrows


def test_print_layout():
    """The rooms by floor and the arrows between them (run with ``-s`` to read them)."""
    arrows = room_arrows()
    floors: dict[int, list[str]] = {}
    for room in arrows:
        floors.setdefault(CLI if room == "cli" else 0 if room == "ground" else FLOORS[room], []).append(room)
    for floor in sorted(floors):
        for room in sorted(floors[floor]):
            print(f"floor {floor}  {room:<13} -> {', '.join(sorted(arrows[room])) or '(nothing)'}")
    assert {"rollout", "model_based", "agent", "study", "trajectories"} <= set(arrows)
    assert "rollout" in arrows["study"] and "rollout" in arrows["trajectories"] and "rollout" in arrows["agent"]
    assert "model_based" not in arrows["agent"]  # the agent is handed a world model, it never loads one


def test_tests_mirror_the_package():
    """``tests/<room>/test_<name>.py`` for a room of the package (ground-floor, command-line and cross-room tests
    sit in ``tests/``), and no module or test is named after a ticket or a version."""
    tests = Path(__file__).parent
    rooms = {p.name for p in PKG.iterdir() if (p / "__init__.py").is_file()}
    misplaced = [str(f.relative_to(tests)) for f in tests.rglob("test_*.py")
                 if f.parent != tests and f.parent.name not in rooms]
    assert not misplaced, f"test files outside a package room: {misplaced}"
    named = [str(f) for f in (*PKG.rglob("*.py"), *tests.rglob("test_*.py"))
             if re.search(r"(^|_)(v\d+|issue\d*)(_|$)", f.stem)]
    assert not named, f"modules or tests named after a ticket or a version: {named}"
    ticket = re.compile(r"\bissue \d+\b|\(issue\b", re.IGNORECASE)
    mentions = [str(f.relative_to(PKG.parent)) for f in (*PKG.rglob("*.py"), *tests.rglob("*.py"))
                if f.name != Path(__file__).name and ticket.search(f.read_text())]
    assert not mentions, f"code that refers to tickets instead of saying what it does: {mentions}"
