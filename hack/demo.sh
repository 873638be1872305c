#!/usr/bin/env bash
# The main job on a fresh machine: set up, start the local cluster with simulated GPU nodes, install the
# FineTuneJob CRD, run the operator, submit an example job and show its plan and status.
#   hack/demo.sh [EXAMPLE]     EXAMPLE is a file in examples/ (default: llama-8b-lora.yaml)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
example="examples/${1:-llama-8b-lora.yaml}"
name="$(sed -n "s/^  name: //p" "$example" | head -1)"

hack/setup.sh
.venv/bin/kubetune dev-cluster up
export KUBECONFIG="${KUBETUNE_STATE:-$HOME/.local/state/kubetune/clusters}/kubetune-dev/kubeconfig"
kubectl=.venv/bin/kubectl

$kubectl apply -f crds/
$kubectl wait --for=condition=Established crd/finetunejobs.kubetune.io --timeout=60s >/dev/null
$kubectl create secret generic hf-token --from-literal=token=not-a-real-token --dry-run=client -o yaml | $kubectl apply -f - >/dev/null

log="$(mktemp -t kubetune-operator.XXXX.log)"
KUBETUNE_RECONCILE_SECONDS=2 .venv/bin/kubetune run-operator >"$log" 2>&1 &
operator=$!
trap 'kill $operator 2>/dev/null || true' EXIT
echo "operator running (pid $operator, log $log)"

$kubectl delete -f "$example" --ignore-not-found >/dev/null
$kubectl apply -f "$example"
for _ in $(seq 60); do
  phase="$($kubectl get ftj "$name" -o jsonpath='{.status.phase}' 2>/dev/null || true)"
  case "$phase" in Succeeded|Failed|Unschedulable) break ;; esac
  sleep 1
done

echo; $kubectl get ftj "$name"
echo; echo "plan:"; $kubectl get ftj "$name" -o jsonpath='{range .status.plan.explanation[*]}  {@}{"\n"}{end}'
echo; echo "predicted memory per GPU (bytes):"
$kubectl get ftj "$name" -o jsonpath='{.status.plan.memory}' | python3 -m json.tool
echo; echo "conditions:"
$kubectl get ftj "$name" -o jsonpath='{range .status.conditions[*]}  {.type}={.status} ({.reason}): {.message}{"\n"}{end}'
echo; $kubectl get jobs,pods -l "kubetune.io/finetunejob=$name" -o wide
echo
echo "The cluster keeps running: export KUBECONFIG=$KUBECONFIG"
echo "Run the operator again with: .venv/bin/kubetune run-operator; stop everything with: .venv/bin/kubetune dev-cluster down"
