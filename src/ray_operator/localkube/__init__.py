"""A local Kubernetes for tests, the demo and the benchmarks.

etcd, kube-apiserver and kube-controller-manager run as processes on loopback; there is no
kubelet and no scheduler, so :mod:`ray_operator.localkube.pod_runner` stands in for the kubelet.
"""
