"""A real local control plane (etcd, kube-apiserver, controller-manager, scheduler) with kwok GPU nodes.

Used by the demo and the integration tests; never by the operator itself.
"""
