{{- /*
Recording rules and alerts, as the `groups:` of a Prometheus rules file: the PrometheusRule's spec, and what the
tests hand to promtool and to a real Prometheus (tests/observability). Alert texts use Prometheus's own
templating, escaped from Helm's.
*/ -}}
{{- define "kubetune.rules" -}}
{{- $a := .Values.alerts -}}
groups:
  - name: kubetune.recording
    rules:
      # How far the memory model can be trusted: each job's highest per-rank measured peak over its prediction.
      - record: finetunejob:kubetune_memory_measured_over_predicted:ratio
        expr: |
          max by (namespace, finetunejob) (
            kubetune_trainer_memory_peak_allocated_bytes / kubetune_trainer_memory_predicted_peak_bytes
          )
      # Tokens per second of all ranks, over five minutes: at least four scrapes at any interval up to 75 s.
      - record: finetunejob:kubetune_trainer_tokens:rate5m
        expr: sum by (namespace, finetunejob) (rate(kubetune_trainer_tokens_total[5m]))
      - record: finetunejob:kubetune_throughput_measured_over_predicted:ratio
        expr: |
          finetunejob:kubetune_trainer_tokens:rate5m
            / on (namespace, finetunejob) kubetune_finetunejob_predicted_tokens_per_second
  - name: kubetune.alerts
    rules:
      - alert: KubetuneJobFailed
        expr: kubetune_finetunejob_phase{phase=~"Failed|Unschedulable"} == 1
        labels: {severity: warning}
        annotations:
          summary: FineTuneJob {{`{{ $labels.namespace }}/{{ $labels.finetunejob }}`}} is {{`{{ $labels.phase }}`}}.
          description: >-
            `kubectl -n {{`{{ $labels.namespace }}`}} describe ftj {{`{{ $labels.finetunejob }}`}}` shows the
            reason in the Failed condition and the events.
      - alert: KubetuneJobStalled
        expr: |
          time() - max by (namespace, finetunejob) (kubetune_trainer_last_step_timestamp_seconds)
            > {{ mul $a.stalledMinutes 60 }}
          and on (namespace, finetunejob) kubetune_finetunejob_phase{phase="Running"} == 1
        for: 2m
        labels: {severity: warning}
        annotations:
          summary: FineTuneJob {{`{{ $labels.namespace }}/{{ $labels.finetunejob }}`}} made no optimizer step for {{ $a.stalledMinutes }} minutes.
          description: >-
            Running, but the last step ended {{`{{ $value | humanizeDuration }}`}} ago: look for a hung collective
            (NCCL), a dead rank or a stuck data loader in the training pods' logs.
      - alert: KubetuneTrainerMetricsMissing
        expr: |
          kubetune_finetunejob_phase{phase="Running"} == 1
          unless on (namespace, finetunejob) kubetune_trainer_step
        for: {{ $a.stalledMinutes }}m
        labels: {severity: warning}
        annotations:
          summary: FineTuneJob {{`{{ $labels.namespace }}/{{ $labels.finetunejob }}`}} is Running but no trainer metrics are scraped.
          description: >-
            Without them stalls and memory cannot be watched: check the PodMonitor (monitoring.podMonitor)
            and that the training pods' metrics ports are reachable from Prometheus.
      - alert: KubetuneMemoryAbovePrediction
        expr: |
          finetunejob:kubetune_memory_measured_over_predicted:ratio > {{ add 100 $a.memoryAbovePredictionPercent }} / 100
        for: 5m
        labels: {severity: warning}
        annotations:
          summary: FineTuneJob {{`{{ $labels.namespace }}/{{ $labels.finetunejob }}`}} peaks at {{`{{ $value | humanizePercentage }}`}} of its predicted memory.
          description: >-
            The memory model under-predicted this job by more than {{ $a.memoryAbovePredictionPercent }}%; it may run out
            of memory on a longer batch. Please report the plan (`kubectl get ftj -o yaml`) with this figure.
      - alert: KubetuneThroughputBelowPrediction
        expr: |
          finetunejob:kubetune_throughput_measured_over_predicted:ratio < {{ $a.throughputBelowPredictionPercent }} / 100
          and on (namespace, finetunejob) kubetune_finetunejob_phase{phase="Running"} == 1
        for: 15m
        labels: {severity: info}
        annotations:
          summary: FineTuneJob {{`{{ $labels.namespace }}/{{ $labels.finetunejob }}`}} trains at {{`{{ $value | humanizePercentage }}`}} of its predicted throughput.
          description: >-
            Below {{ $a.throughputBelowPredictionPercent }}% of the plan's tokens/s for 15 minutes: a slow
            interconnect, a data loader bottleneck or a throttled GPU (see the DCGM panels of the job dashboard).
      - alert: KubetuneOperatorDown
        expr: absent(up{job="{{ include "kubetune.fullname" . }}-metrics"} == 1)
        for: 5m
        labels: {severity: critical}
        annotations:
          summary: The kubetune operator has not been scraped for 5 minutes.
          description: >-
            New FineTuneJobs are not planned and running ones are not followed:
            `kubectl -n {{ .Release.Namespace }} get pods -l app.kubernetes.io/instance={{ .Release.Name }}`.
      - alert: KubetuneReconcileErrors
        expr: sum(rate(kubetune_reconcile_errors_total[5m])) * 60 > {{ $a.reconcileErrorsPerMinute }}
        for: 10m
        labels: {severity: warning}
        annotations:
          summary: The kubetune operator fails {{`{{ $value | humanize }}`}} reconciles a minute.
          description: >-
            kopf retries them, but jobs are not progressing: the operator's log names the exception.
{{- end -}}
