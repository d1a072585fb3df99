"""The house stays in order (../shared/STYLE.md, "One of each"): the import graph of `lib_nb` has no cycle, counting
imports inside function bodies; no module imports a `_private` name from a sibling; sibling imports sit at the top
of the module; no module assigns to another module's attributes (monkeypatching).

Read from the modules' source with `ast`, so it sees every import, wherever it is written."""
import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1]/'lib_nb'
MODULES = {p.stem: p for p in sorted(PKG.glob('*.py')) if p.stem not in ('__init__', '_modidx')}


def sibling_imports(module: str) -> list[tuple[str, list[str], bool, int]]:
    "(sibling, imported names, at module level?, line) for every import of a lib_nb module in `module`'s source."
    tree = ast.parse(MODULES[module].read_text())
    top = {id(n) for n in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            mod = node.module or ''
            if node.level == 1: parts = [mod.split('.')[0]] if mod else [a.name for a in node.names]
            elif mod == 'lib_nb': parts = [a.name for a in node.names]
            elif mod.startswith('lib_nb.'): parts = [mod.split('.')[1]]
            else: continue
            names = [a.name for a in node.names] if mod and mod != 'lib_nb' else []
            out += [(p, names, id(node) in top, node.lineno) for p in parts if p in MODULES]
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith('lib_nb.') and a.name.split('.')[1] in MODULES:
                    out.append((a.name.split('.')[1], [], id(node) in top, node.lineno))
    return [o for o in out if o[0] != module]


def import_graph() -> dict[str, set[str]]:
    return {m: {s for s, *_ in sibling_imports(m)} for m in MODULES}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    "Every cycle found by a depth-first search (each reported once, from where the search met it)."
    state, stack, found = {}, [], []
    def visit(u):
        state[u] = 1; stack.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == 1: found.append(stack[stack.index(v):] + [v])
            elif v not in state: visit(v)
        stack.pop(); state[u] = 2
    for m in sorted(graph):
        if m not in state: visit(m)
    return found


def test_the_checks_can_fail():
    "The cycle finder sees a cycle in a graph that has one, and none in a chain."
    assert cycles({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == [['a', 'b', 'c', 'a']]
    assert cycles({'a': {'b'}, 'b': {'c'}, 'c': set()}) == []
    assert len(MODULES) > 10 and 'build' in import_graph()['ablation'] | import_graph()['analysis'] | {'build'}


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def test_no_private_name_from_a_sibling():
    bad = [f'{m}:{line} imports {n} from {s}' for m in MODULES for s, names, _, line in sibling_imports(m)
           for n in names if n.startswith('_') and not n.startswith('__')]
    assert bad == []


def test_sibling_imports_at_the_top():
    inside = [f'{m}:{line} imports {s} inside a function or class' for m in MODULES
              for s, _, top, line in sibling_imports(m) if not top]
    assert inside == []


def test_no_monkeypatching():
    "No assignment to an attribute of an imported lib_nb module (`lib_nb.bases.M_dash = ...`)."
    bad = []
    for m, p in MODULES.items():
        tree = ast.parse(p.read_text())
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith('lib_nb'): aliases[a.asname or a.name.split('.')[0]] = a.name
            if isinstance(node, ast.ImportFrom) and (node.module == 'lib_nb' or node.level == 1 and not node.module):
                for a in node.names: aliases[a.asname or a.name] = a.name
        for node in ast.walk(tree):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else []
            for t in targets:
                for el in (t.elts if isinstance(t, ast.Tuple) else [t]):
                    base = el
                    while isinstance(base, ast.Attribute): base = base.value
                    if isinstance(el, ast.Attribute) and isinstance(base, ast.Name) and base.id in aliases:
                        bad.append(f'{m}:{node.lineno} assigns {ast.unparse(el)}')
    assert bad == []
