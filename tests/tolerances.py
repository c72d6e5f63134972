"""Reads the log `make test-kernels` writes (each comparison's error as a share of its
scale, its tolerance, the test) and prints the worst error per tolerance: the spread
across kernels and thread counts that the tests' comments quote."""

import sys
from collections import defaultdict


def main(path: str) -> int:
    worst: dict[str, tuple[float, str]] = defaultdict(lambda: (0.0, ""))
    count = 0
    with open(path) as f:
        for line in f:
            ratio, rtol, test = line.rstrip("\n").split("\t")
            count += 1
            if float(ratio) >= worst[rtol][0]:
                worst[rtol] = (float(ratio), test)
    print(f"{count} comparisons; the worst error as a share of the scale, by relative tolerance:")
    for rtol, (ratio, test) in sorted(worst.items(), key=lambda kv: float(kv[0])):
        share = f"{ratio / float(rtol):.2f} of it" if float(rtol) else "absolute tolerance"
        print(f"  rtol {rtol}: worst {ratio:.2e} ({share}) in {test}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
