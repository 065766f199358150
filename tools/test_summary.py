"""Sum the individual test cases of every meson test run into one line.

Reads meson's JSON test logs and counts the cases each runner reports
(criterion's "Synthesis", unittest's "Ran N tests", node's "# pass/# fail");
a test program whose output has no such count counts as one test.
Prints "N passed, N failed" and exits 1 if anything failed.
"""
import json
import re
import sys

passed = failed = 0
for path in sys.argv[1:]:
    try:
        lines = open(path, encoding="utf-8", errors="replace").read().splitlines()
    except OSError:
        print(f"missing test log {path}", file=sys.stderr)
        failed += 1
        continue
    for line in lines:
        t = json.loads(line)
        out = (t.get("stdout") or "") + (t.get("stderr") or "")
        ok = t.get("result") in ("OK", "EXPECTEDFAIL")
        if t.get("result") == "SKIP":
            continue
        m = re.search(r"Synthesis: Tested: (\d+) \| Passing: (\d+) \| Failing: (\d+) \| Crashing: (\d+)", out)
        r = re.search(r"^Ran (\d+) tests?", out, re.M)
        n = re.search(r"^# pass (\d+)\s*$.*?^# fail (\d+)", out, re.M | re.S)
        if m:
            p, f = int(m.group(2)), int(m.group(3))  # criterion counts crashes in Failing
        elif r:
            total = int(r.group(1))
            fm = re.search(r"FAILED \((?:failures=(\d+))?(?:, )?(?:errors=(\d+))?", out)
            f = sum(int(x) for x in fm.groups() if x) if fm else 0
            p = total - f
        elif n:
            p, f = int(n.group(1)), int(n.group(2))
        else:
            p, f = (1, 0) if ok else (0, 1)
        if not ok and f == 0:
            f, p = 1, max(p - 1, 0)  # crashed or timed out after its cases passed
        passed += p
        failed += f
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
