{{/* Names and labels shared by every template. */}}
{{- define "modelforge.fullname" -}}
{{- printf "%s-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "modelforge.labels" -}}
app.kubernetes.io/name: modelforge
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "modelforge.selector" -}}
app.kubernetes.io/name: modelforge
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* Rules the operator needs on namespaced resources (kopf framework + its own API calls). */}}
{{- define "modelforge.namespacedRules" -}}
# Framework (kopf): watch our resources (event handlers only: kopf writes no finalizer or annotation on
# them). The operator writes their status and posts events.
- apiGroups: ["modelforge.io"]
  resources: ["finetunejobs", "modelserves"]
  verbs: ["list", "watch"]
- apiGroups: ["modelforge.io"]
  resources: ["finetunejobs/status", "modelserves/status"]
  verbs: ["patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
# Application: one training attempt = Job + headless Service + ConfigMap; deleted on restart/suspend.
# A serve's live LoRA adapters are a ConfigMap too, kept as the spec says by server-side apply (patch).
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "create", "delete"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "create", "patch", "delete"]
# Application: Services (an attempt's headless one, created; a serve's, kept as the spec says by
# server-side apply: patch).
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "create", "patch", "delete"]
# Application: observe training and serving pods; the last log line of a crashing engine; annotate serving
# pods with their live adapters' digest (patch: their kubelet then refreshes the mounted list at once).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "patch"]
# Application: why the Job controller could not create pods (its FailedCreate events: quota, PodSecurity).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["list"]
- apiGroups: [""]
  resources: ["pods/log"]
  verbs: ["get"]
# Application: serving Deployments (created, patched to roll or scale).
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "create", "patch"]
# Application: a ModelServe reads its FineTuneJob; a FineTuneJob creates its ModelServe (spec.serve).
- apiGroups: ["modelforge.io"]
  resources: ["finetunejobs"]
  verbs: ["get"]
- apiGroups: ["modelforge.io"]
  resources: ["modelserves"]
  verbs: ["create"]
# Application: a queued attempt's Kueue Workload (read only): why it waits or was preempted, in Kueue's words.
- apiGroups: ["kueue.x-k8s.io"]
  resources: ["workloads"]
  verbs: ["list"]
{{- if .Values.ray.enabled }}
# Application (ray.enabled): a training attempt of `distributed.runtime: ray` is a KubeRay RayJob instead of
# the Job and Service; its pods are KubeRay's (observed through the pod list above).
- apiGroups: ["ray.io"]
  resources: ["rayjobs"]
  verbs: ["get", "create", "delete"]
{{- end }}
{{- end -}}

{{/* Cluster-scoped: kopf watches CRDs to notice resources installed after it started (scope cluster;
     in scope namespaces the operator skips that discovery). */}}
{{- define "modelforge.clusterRules" -}}
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- end -}}
