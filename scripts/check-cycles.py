#!/usr/bin/env python3
"""Fails when the files of a Rust crate import each other in a cycle.

Usage: scripts/check-cycles.py SRC_DIR...   (e.g. server/src server/core/src loadtest/src)

Every `crate::a::b` and `super::x` path in a file is an edge to the file that defines the
longest prefix of it (a/b.rs, a/b/mod.rs, a.rs or a/mod.rs). A `mod` declaration is not an
edge, so a parent module may declare children that import it; a child importing its parent
while the parent imports the child is a cycle like any other. Paths through a child module
declared in the file (`mod child;` ... `child::x`) count too.
"""
import pathlib
import re
import sys

PATH = re.compile(r"\b(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)+|::\{)")
USE_GROUP = re.compile(r"\b(crate|super)::((?:[a-z_][a-z0-9_]*::)*)\{([^}]*)\}", re.S)


def module_of(src, file):
    rel = file.relative_to(src).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return parts


def file_of(src, parts):
    """The file defining the longest existing prefix of module path `parts`."""
    for n in range(len(parts), -1, -1):
        base = src.joinpath(*parts[:n]) if n else src
        for candidate in ([base.with_suffix(".rs"), base / "mod.rs"] if n else [src / "lib.rs", src / "main.rs"]):
            if candidate.exists():
                return candidate
    return None


def edges(src, file):
    text = re.sub(r"//[^\n]*", "", file.read_text())
    # Test-only code may import anything: drop `#[cfg(test)] mod x;` declarations and the inline
    # test module (by convention the file's last item).
    text = re.sub(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*;", "", text)
    text = re.split(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text)[0]
    here = module_of(src, file)
    paths = []
    for root, rest in PATH.findall(text):
        if rest != "::{":
            paths.append((root, rest.strip(":").split("::")))
    for root, prefix, names in USE_GROUP.findall(text):
        for name in re.split(r"[,\s]+", names):
            name = name.split("::")[0].strip()
            if name and name != "self":
                paths.append((root, [p for p in prefix.split("::") if p] + [name]))
    # Paths relative to this module: `child::x` where `mod child;` is declared here.
    children = re.findall(r"\bmod\s+([a-z_][a-z0-9_]*)\s*;", text)
    for child in children:
        if re.search(r"(?<![:\w])" + child + r"::", text):
            paths.append(("self", [child]))
    for root, parts in paths:
        if root == "self":
            target = here + parts
        elif root == "crate":
            target = parts
        else:
            # `super` of a mod.rs is its parent's parent dir module; of a.rs, its directory.
            target = here[:-1] + parts
            while target and target[0] == "super":
                target = target[1:]
        found = file_of(src, target)
        if found and found != file:
            yield found


def main():
    failed = False
    for arg in sys.argv[1:]:
        src = pathlib.Path(arg)
        files = sorted(src.rglob("*.rs"))
        graph = {f: set(edges(src, f)) for f in files}
        state, stack = {}, []

        def visit(node):
            nonlocal failed
            state[node] = "open"
            stack.append(node)
            for nxt in sorted(graph.get(node, ())):
                if state.get(nxt) == "open":
                    cycle = stack[stack.index(nxt):] + [nxt]
                    print("import cycle: " + " -> ".join(str(p.relative_to(src)) for p in cycle))
                    failed = True
                elif nxt not in state:
                    visit(nxt)
            stack.pop()
            state[node] = "done"

        for f in files:
            if f not in state:
                visit(f)
    if failed:
        sys.exit(1)
    print("no import cycles in " + ", ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
