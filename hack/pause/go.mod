// The node's sandbox ("pause") binary: holds a pod's namespaces and reaps its zombies. Built by
// hack/build-bins.sh and packed into an image by `kubetune dev-cluster up` (no registry is reachable here).
module kubetune.dev/hack/pause

go 1.26.0
