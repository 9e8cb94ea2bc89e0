#!/usr/bin/env python3
"""Checks deploy/docker/Dockerfile (with dockerfile-parse) beyond its syntax: every instruction is
one Docker knows, each stage starts with FROM, COPY --from names an earlier stage, exec-form
ENTRYPOINT/CMD/HEALTHCHECK are JSON arrays, and what COPY takes from the build context exists and
is not excluded by .dockerignore. Exits 1 naming the line of the first problem found."""
import fnmatch, json, os, sys
from dockerfile_parse import DockerfileParser

KNOWN = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME", "USER",
         "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL", "MAINTAINER"}

def fail(line, msg):
    print(f"deploy/docker/Dockerfile:{line}: {msg}")
    sys.exit(1)

def main(root):
    path = os.path.join(root, "deploy/docker/Dockerfile")
    ignore = []
    di = os.path.join(root, ".dockerignore")
    if os.path.exists(di):
        ignore = [l.strip() for l in open(di) if l.strip() and not l.startswith("#")]
    p = DockerfileParser(path=path)
    stages, seen_from = [], False
    for ins in p.structure:
        name, line, value = ins["instruction"], ins["startline"] + 1, ins["value"]
        if name == "COMMENT":
            continue
        if name not in KNOWN:
            fail(line, f"unknown instruction {name}")
        if name == "FROM":
            seen_from = True
            words = value.split()
            stages.append(words[2].lower() if len(words) >= 3 and words[1].upper() == "AS" else None)
            continue
        if not seen_from and name != "ARG":
            fail(line, f"{name} before the first FROM")
        if name in ("ENTRYPOINT", "CMD") and value.lstrip().startswith("["):
            try:
                v = json.loads(value)
                assert isinstance(v, list) and all(isinstance(x, str) for x in v)
            except Exception:
                fail(line, f"{name} is not a JSON array of strings: {value}")
        if name == "COPY":
            words = value.split()
            flags = [w for w in words if w.startswith("--")]
            args = [w for w in words if not w.startswith("--")]
            if len(args) < 2:
                fail(line, "COPY needs a source and a destination")
            source_stage = next((f.split("=", 1)[1].lower() for f in flags if f.startswith("--from=")), None)
            if source_stage is not None:
                if source_stage not in [s for s in stages[:-1] if s]:
                    fail(line, f"COPY --from={source_stage}: no earlier stage has that name")
                continue
            for src in args[:-1]:
                rel = src.rstrip("/")
                if not os.path.exists(os.path.join(root, rel)):
                    fail(line, f"COPY {src}: not in the build context (the source tree's root)")
                for pat in ignore:
                    if fnmatch.fnmatch(rel, pat.rstrip("/")):
                        fail(line, f"COPY {src}: excluded by .dockerignore ({pat})")
    if not stages:
        fail(1, "no FROM")
    print(f"deploy/docker/Dockerfile: {len(p.structure)} instructions in {len(stages)} stages, ok")

main(sys.argv[1] if len(sys.argv) > 1 else ".")
