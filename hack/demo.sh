#!/usr/bin/env bash
# The main job on a fresh machine: set up, start the local cluster (kwok's simulated GPU nodes and a real
# node), install the FineTuneJob CRD, run the operator, submit an example job and show it plan and run.
#   hack/demo.sh [EXAMPLE]     EXAMPLE is a file in examples/ (default: tiny-lora.yaml, which really trains on
#                              the real node; the others plan onto simulated nodes, where kwok plays the pods)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
example="examples/${1:-tiny-lora.yaml}"
name="$(sed -n "s/^  name: //p" "$example" | head -1)"

hack/setup.sh
.venv/bin/kubetune dev-cluster up
export KUBECONFIG="${KUBETUNE_STATE:-$HOME/.local/state/kubetune/clusters}/kubetune-dev/kubeconfig"
kubectl=.venv/bin/kubectl

$kubectl apply -f crds/
$kubectl wait --for=condition=Established crd/finetunejobs.kubetune.io --timeout=60s >/dev/null
$kubectl create secret generic hf-token --from-literal=token=not-a-real-token --dry-run=client -o yaml | $kubectl apply -f - >/dev/null
if grep -q "claimName: demo-data" "$example"; then
  .venv/bin/kubetune dev-cluster seed
fi

log="$(mktemp -t kubetune-operator.XXXX.log)"
KUBETUNE_TRAINER_IMAGE="$(.venv/bin/kubetune dev-cluster trainer-image)" KUBETUNE_RECONCILE_SECONDS=2 \
  .venv/bin/kubetune run-operator >"$log" 2>&1 &
operator=$!
trap 'kill $operator 2>/dev/null || true' EXIT
echo "operator running (pid $operator, log $log)"

$kubectl delete -f "$example" --ignore-not-found --wait >/dev/null
$kubectl apply -f "$example"
started=$SECONDS
shown=""
while ((SECONDS - started < 900)); do
  row="$($kubectl get ftj "$name" --no-headers 2>/dev/null || true)"
  phase="$($kubectl get ftj "$name" -o jsonpath='{.status.phase}' 2>/dev/null || true)"
  if [ "$row" != "$shown" ]; then echo "$row"; shown="$row"; fi
  case "$phase" in Succeeded|Failed|Unschedulable) break ;; esac
  sleep 2
done
echo "finished after $((SECONDS - started)) s"

echo; $kubectl get ftj "$name"
echo; echo "plan:"; $kubectl get ftj "$name" -o jsonpath='{range .status.plan.explanation[*]}  {@}{"\n"}{end}'
echo; echo "predicted memory per GPU (bytes):"
$kubectl get ftj "$name" -o jsonpath='{.status.plan.memory}' | python3 -m json.tool
echo; echo "conditions:"
$kubectl get ftj "$name" -o jsonpath='{range .status.conditions[*]}  {.type}={.status} ({.reason}): {.message}{"\n"}{end}'
echo; $kubectl get jobs,pods -l "kubetune.io/finetunejob=$name" -o wide
output_claim="$($kubectl get ftj "$name" -o jsonpath='{.spec.output.claimName}')"
if [ -n "$output_claim" ]; then
  volume="$($kubectl get pvc "$output_claim" -o jsonpath='{.spec.volumeName}')"
  folder="$($kubectl get pv "$volume" -o jsonpath='{.spec.local.path}')"
  rank0="$($kubectl get pods -l "kubetune.io/finetunejob=$name,batch.kubernetes.io/job-completion-index=0" \
    -o jsonpath='{.items[-1:].metadata.name}')"
  # From the trainer's log on the claim, which keeps every step (the container log has about a hundred lines).
  echo; echo "the loss, from train_log.jsonl on the claim (every 10th step, and the last):"
  python3 -c 'import json, sys
entries = [json.loads(line) for line in open(sys.argv[1])]
for e in [e for e in entries if e["step"] % 10 == 1] + entries[-1:]:
    print("  step %d/%s loss %.4f" % (e["step"], sys.argv[2], e["loss"]))' "$folder/train_log.jsonl" \
    "$($kubectl get ftj "$name" -o jsonpath='{.status.progress.totalSteps}')"
  echo "rank 0's last step line, from kubectl logs $rank0:"
  $kubectl logs "$rank0" | grep -E "^step [0-9]+/" | tail -1 | sed 's/^/  /'
  echo; echo "on claim $output_claim ($folder):"
  (cd "$folder" && find checkpoints final -maxdepth 1 | sort | sed 's/^/  /')
  echo "the adapter was saved to $($kubectl get ftj "$name" -o jsonpath='{.spec.output.path}')/final on claim $output_claim"
fi
echo
echo "The cluster keeps running: export KUBECONFIG=$KUBECONFIG"
echo "Run the operator again with: .venv/bin/kubetune run-operator; stop everything with: .venv/bin/kubetune dev-cluster down"
