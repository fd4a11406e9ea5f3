#!/usr/bin/env python3
"""Fails when the modules of any crate import each other in a circle.

For every crate root of the workspace (each `lib.rs`, `main.rs`, `src/bin/*.rs`, test and bench
target), it walks the `mod name;` tree to the files it declares, reads each file's paths that
start with `crate::`, `super::` or `self::` (in `use` trees and in code) and relative paths into
a child module, resolves each to the deepest module file it names, and looks for strongly
connected components in that file graph. Test code (`#[cfg(test)]` items) is left out: a test
module reaching back to its parent is not architecture.

Usage: scripts/check-cycles.py [ROOT]   (ROOT defaults to the repository)
Prints each circle with the imports that tie it and exits 1, or prints a one-line summary.
"""

import os
import re
import sys

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def strip_comments_and_strings(text):
    """Blanks out comments, string and char literals, keeping line structure."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            i = j
            continue
        if text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append("\n" * text.count("\n", i, j))
            i = j
            continue
        m = re.match(r'(b|c)?r(#*)"', text[i:])
        if m and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            end = text.find('"' + m.group(2), i + m.end())
            end = n if end < 0 else end + 1 + len(m.group(2))
            out.append('""' + "\n" * text.count("\n", i, end))
            i = end
            continue
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j + 1
            continue
        if c == "'":
            # A char literal ('a', '\n', '\u{1F600}'), not a lifetime ('a).
            m = re.match(r"'(\\.[^']*|[^'\\])'", text[i:])
            if m:
                out.append("' '")
                i += m.end()
                continue
        out.append(c)
        i += 1
    return "".join(out)


def matching_brace(text, open_at):
    depth = 0
    for j in range(open_at, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    return len(text) - 1


def drop_test_items(text):
    """Removes each item under `#[cfg(test)]` (a `mod … { }` block, a `mod …;`, a `use`, a fn)."""
    while True:
        m = re.search(r"#\[cfg\(test\)\]", text)
        if not m:
            return text
        rest = m.end()
        semi = text.find(";", rest)
        brace = text.find("{", rest)
        if brace < 0 or (0 <= semi < brace):
            end = semi + 1
        else:
            end = matching_brace(text, brace) + 1
        text = text[: m.start()] + " " + text[end:]


def expand_use_tree(tree):
    """`a::{b, c::{d as e, f}}` -> [['a','b'], ['a','c','d'], ['a','c','f']]."""
    tree = re.sub(r"\s+as\s+" + IDENT, "", tree)
    tree = re.sub(r"\s+", "", tree)
    results = []

    def walk(prefix, s):
        depth, start, parts = 0, 0, []
        for k, ch in enumerate(s):
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            elif ch == "," and depth == 0:
                parts.append(s[start:k])
                start = k + 1
        parts.append(s[start:])
        for part in parts:
            if not part:
                continue
            brace = part.find("{")
            if brace >= 0:
                head = [x for x in part[:brace].split("::") if x]
                walk(prefix + head, part[brace + 1 : part.rfind("}")])
            else:
                results.append(prefix + [x for x in part.split("::") if x])

    walk([], tree)
    return results


class Crate:
    def __init__(self, root_file):
        self.root_file = root_file
        self.files = {}  # module path tuple -> file
        self.inline = {}  # file -> set of inline module paths declared in it
        self._walk(root_file, ())

    def _walk(self, path, modpath):
        self.files[modpath] = path
        text = drop_test_items(strip_comments_and_strings(open(path, encoding="utf-8").read()))
        directory = os.path.dirname(path)
        base = os.path.basename(path)
        if base in ("lib.rs", "main.rs", "mod.rs") or path == self.root_file:
            child_dir = directory
        else:
            child_dir = os.path.join(directory, base[:-3])
        for m in re.finditer(r"(?:^|[\s;}])(?:pub(?:\([^)]*\))?\s+)?mod\s+(" + IDENT + r")\s*;", text):
            name = m.group(1)
            for candidate in (os.path.join(child_dir, name + ".rs"), os.path.join(child_dir, name, "mod.rs")):
                if os.path.exists(candidate):
                    self._walk(candidate, modpath + (name,))
                    break

    def resolve(self, segments):
        """The deepest module file that an absolute path names."""
        for k in range(len(segments), -1, -1):
            if tuple(segments[:k]) in self.files:
                return tuple(segments[:k])
        return ()

    def edges(self):
        by_file = {}
        for modpath, path in self.files.items():
            text = drop_test_items(strip_comments_and_strings(open(path, encoding="utf-8").read()))
            found = {}
            for absolute, shown in self._references(text, modpath):
                target = self.resolve(absolute)
                if target != modpath:
                    found.setdefault(target, set()).add(shown)
            by_file[modpath] = found
        return by_file

    def _references(self, text, modpath):
        # Inline `mod name { … }` blocks shift what `self` and `super` mean inside them.
        spans = []
        for m in re.finditer(r"(?:^|[\s;}])(?:pub(?:\([^)]*\))?\s+)?mod\s+(" + IDENT + r")\s*\{", text):
            open_at = text.index("{", m.start(1))
            spans.append((open_at, matching_brace(text, open_at), m.group(1)))

        def scope_at(pos):
            inner = [s for s in spans if s[0] < pos < s[1]]
            inner.sort()
            return modpath + tuple(name for _, _, name in inner)

        def absolute(segs, scope):
            if not segs:
                return None
            head = segs[0]
            if head == "crate":
                return segs[1:]
            if head in ("self", "super"):
                base = list(scope)
                rest = list(segs)
                while rest and rest[0] in ("self", "super"):
                    if rest.pop(0) == "super" and base:
                        base.pop()
                return base + rest
            # A relative path into a child module of this scope.
            if tuple(scope) + (head,) in self.files:
                return list(scope) + segs
            return None

        for m in re.finditer(r"\buse\s+([^;]+);", text):
            scope = scope_at(m.start())
            for segs in expand_use_tree(m.group(1)):
                segs = [s for s in segs if s != "*"]
                full = absolute(segs, scope)
                if full is not None:
                    yield full, "use " + "::".join(segs)
        for m in re.finditer(r"(?<![A-Za-z0-9_:])((?:crate|super|self)(?:::" + IDENT + ")+)", text):
            scope = scope_at(m.start())
            segs = m.group(1).split("::")
            full = absolute(segs, scope)
            if full is not None:
                yield full, m.group(1)
        for m in re.finditer(r"(?<![A-Za-z0-9_:])(" + IDENT + r")::(" + IDENT + ")", text):
            scope = scope_at(m.start())
            if m.group(1) in ("crate", "super", "self"):
                continue
            if tuple(scope) + (m.group(1),) in self.files:
                yield list(scope) + [m.group(1), m.group(2)], m.group(0)


def strongly_connected(graph):
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(component)

    sys.setrecursionlimit(10000)
    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def crate_roots(repo):
    roots = []
    for top in ("crates", "tests", "benches"):
        base = os.path.join(repo, top)
        if not os.path.isdir(base):
            continue
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if d not in ("target", "fuzz", "node_modules")]
            if "Cargo.toml" not in filenames:
                continue
            cargo = open(os.path.join(dirpath, "Cargo.toml"), encoding="utf-8").read()
            declared = re.findall(r'^path\s*=\s*"([^"]+\.rs)"', cargo, re.M)
            candidates = [os.path.join(dirpath, p) for p in declared]
            candidates += [os.path.join(dirpath, "src", f) for f in ("lib.rs", "main.rs")]
            bindir = os.path.join(dirpath, "src", "bin")
            if os.path.isdir(bindir):
                candidates += [os.path.join(bindir, f) for f in sorted(os.listdir(bindir)) if f.endswith(".rs")]
            benchdir = os.path.join(dirpath, "benches")
            if os.path.isdir(benchdir):
                candidates += [os.path.join(benchdir, f) for f in sorted(os.listdir(benchdir)) if f.endswith(".rs")]
            for c in candidates:
                c = os.path.normpath(c)
                if os.path.exists(c) and c not in roots:
                    roots.append(c)
    return roots


def main():
    repo = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), ".."))
    roots = crate_roots(repo)
    circles, modules = 0, 0
    for root in roots:
        crate = Crate(root)
        modules += len(crate.files)
        edges = crate.edges()
        graph = {m: set(t) for m, t in edges.items()}
        for component in strongly_connected(graph):
            circles += 1
            members = set(component)
            name = lambda m: os.path.relpath(crate.files[m], repo)
            print(f"circle in {os.path.relpath(root, repo)}: {', '.join(sorted(name(m) for m in component))}")
            for m in sorted(component):
                for target, shown in sorted(edges[m].items()):
                    if target in members:
                        print(f"  {name(m)} -> {name(target)}: {', '.join(sorted(shown))}")
    if circles:
        print(f"{circles} import circle(s): break each by moving what both sides need below them", file=sys.stderr)
        return 1
    print(f"no import circles: {len(roots)} crate roots, {modules} modules")
    return 0


if __name__ == "__main__":
    sys.exit(main())
