#!/usr/bin/env python3
"""Sorts the ThreadSanitizer reports of a `swift test` log (scripts/test-sanitize.sh).

A report counts as the known false positive when both of its accesses happen inside a closure
given to `Mutex.withLock`: one of the first nine frames of each stack (the closure and what it
calls) points at a source line that calls `withLock`. Synchronization's lock is invisible to
TSan on Linux, see scripts/sanitizers/mutex-false-positive.swift. Every other report is printed in full and makes
the exit status 1.

    scripts/tsan-triage.py LOG
"""
import re
import sys

FRAME = re.compile(r"#(\d+) \S+ (/\S+?\.swift):(\d+)")


def line_of(path, number):
    try:
        with open(path, encoding="utf-8", errors="replace") as source:
            for index, line in enumerate(source, 1):
                if index == number:
                    return line
    except OSError:
        return ""
    return ""


def stacks(report):
    """The report's access stacks: frame lists after each 'access'/'Read'/'Write' header."""
    result, current = [], None
    for line in report.splitlines():
        if re.match(r"\s+(Read|Write|Modifying|Previous)", line):
            current = []
            result.append(current)
        elif line.strip().startswith("Location is") or line.strip().startswith("Thread T"):
            current = None
        elif current is not None:
            match = FRAME.search(line)
            if match:
                current.append((int(match.group(1)), match.group(2), int(match.group(3))))
    return result


def under_lock(frames):
    return any(number <= 8 and "withLock" in line_of(path, line) for number, path, line in frames)


def main():
    text = open(sys.argv[1], encoding="utf-8", errors="replace").read()
    reports = re.findall(r"WARNING: ThreadSanitizer:.*?(?=\n==================|\Z)", text, re.S)
    known, other, places = 0, [], {}
    for report in reports:
        accesses = stacks(report)
        if accesses and all(under_lock(frames) for frames in accesses):
            known += 1
            first = accesses[0][0] if accesses[0] else None
            if first:
                key = f"{first[1].split('/work/', 1)[-1]}:{first[2]}"
                places[key] = places.get(key, 0) + 1
        else:
            other.append(report)
    print(f"ThreadSanitizer: {len(reports)} reports, {known} inside Mutex.withLock (the known false positive), {len(other)} others")
    for place, count in sorted(places.items()):
        print(f"  withLock: {place} ×{count}")
    for report in other:
        print(report[:6000])
    sys.exit(1 if other else 0)


if __name__ == "__main__":
    main()
