"""A first job: count the cluster's nodes and spread a few tasks over them.

Run with `ray-operator job submit examples/jobs/hello_cluster.py --address URL -p tasks=8 --follow`.
Parameters arrive as `--kwargs key=value ...`, as with the original ray-pod.
"""

import argparse
import time
from collections import Counter

import ray


class ParseKwargs(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, dict(v.split("=", 1) for v in values))


parser = argparse.ArgumentParser()
parser.add_argument("-k", "--kwargs", nargs="*", action=ParseKwargs, default={})
args = parser.parse_args()
tasks = int(args.kwargs.get("tasks", "8"))

ray.init()
alive = [n for n in ray.nodes() if n["Alive"]]
print(f"cluster: {len(alive)} alive nodes, {ray.cluster_resources().get('CPU', 0):.0f} CPUs")


@ray.remote(num_cpus=1)
def square(x: int) -> tuple[int, str]:
    time.sleep(0.5)
    return x * x, ray.util.get_node_ip_address()


results = ray.get([square.remote(i) for i in range(tasks)])
print(f"sum of squares of 0..{tasks - 1}: {sum(r for r, _ in results)}")
for ip, count in sorted(Counter(ip for _, ip in results).items()):
    print(f"  {count} tasks ran on node {ip}")
