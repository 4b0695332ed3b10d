{{/* Name of the chart's objects: the release name, with the chart name unless already in it. */}}
{{- define "ray-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "ray-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "ray-operator.labels" -}}
{{ include "ray-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "ray-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "ray-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "ray-operator.subjects" -}}
- kind: ServiceAccount
  name: {{ include "ray-operator.serviceAccountName" . }}
  namespace: {{ .Release.Namespace }}
{{- end -}}

{{- define "ray-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion (toString .Values.image.tag)) -}}
{{- end -}}

{{/*
The namespaces the operator watches, as a JSON list: [] means every namespace.
Namespaced RBAC without a list means the release namespace alone.
*/}}
{{- define "ray-operator.watchNamespaces" -}}
{{- $namespaces := .Values.watchNamespaces | default list -}}
{{- if kindIs "string" $namespaces -}}
{{- $namespaces = splitList "," $namespaces -}}
{{- end -}}
{{- $clean := list -}}
{{- range $namespaces -}}
{{- if trim . -}}
{{- $clean = append $clean (trim .) -}}
{{- end -}}
{{- end -}}
{{- if and (not $clean) (not .Values.rbac.clusterWide) -}}
{{- $clean = list .Release.Namespace -}}
{{- end -}}
{{- $clean | uniq | toJson -}}
{{- end -}}

{{/*
What the operator does, resource by resource: each verb named, no wildcards.
Shared by the ClusterRole (cluster-wide) and the Role of each watched namespace.
*/}}
{{- define "ray-operator.rules" -}}
# Ray: watched and reconciled (patch: the defaults it was given, recorded at creation);
# RayPipelines create and delete them.
- apiGroups: ["ray.kubeflow.org"]
  resources: ["rays"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["ray.kubeflow.org"]
  resources: ["rays/status"]
  verbs: ["get", "patch"]
# A Ray's children name it as owner with blockOwnerDeletion, which clusters with
# OwnerReferencesPermissionEnforcement allow only to who may update the owner's finalizers.
- apiGroups: ["ray.kubeflow.org"]
  resources: ["rays/finalizers"]
  verbs: ["update"]
# RayJob: watched and reconciled (patch: its finalizer, which stops the Ray job on deletion);
# RayPipelines create them, and patch spec.kill at a deadline.
- apiGroups: ["ray.kubeflow.org"]
  resources: ["rayjobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["ray.kubeflow.org"]
  resources: ["rayjobs/status"]
  verbs: ["get", "patch"]
- apiGroups: ["ray.kubeflow.org"]
  resources: ["rayjobs/finalizers"]
  verbs: ["update"]
- apiGroups: ["ray.kubeflow.org"]
  resources: ["raypipelines"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["ray.kubeflow.org"]
  resources: ["raypipelines/status"]
  verbs: ["get", "patch"]
- apiGroups: ["ray.kubeflow.org"]
  resources: ["raypipelines/finalizers"]
  verbs: ["update"]
# Children of a Ray: head and worker Deployments, head Service (drift is repaired in place);
# delete: a worker group taken out of the spec.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "update", "delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "update"]
# spec.gcsFaultTolerance: the Job that removes a deleted Ray's keys from Redis.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create"]
# spec.networkPolicy: the cluster's NetworkPolicy (delete: when the spec drops it).
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "list", "watch", "create", "update", "delete"]
# spec.auth: the token Secret, created with a random token and watched as metadata only. get:
# the token is read only to stop a Ray job whose runner is gone (a RayJob's finalizer).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "delete"]
# A RayJob's children, watched so that lost ones are recreated and status mirrors at once.
# ConfigMap: job data and status (patch: spec.kill). update is not used directly, but the
# runner's Role grants get/update/patch, and a Role may only grant rights its creator holds.
# delete: an autoscaler's ConfigMap (its code and config) when spec.autoscaling is turned off.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
# The runner Pod (delete: one that ended before its job is replaced, up to backoffLimit).
# delete also: a worker Ray's autoscaler drained and named for removal (spec.autoscaling).
# patch: lift the scheduling gate of an autoscaled group's new worker once its count settled.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# The runner's own identity: it may read and update its ConfigMap only. Granting that in a Role
# requires holding the same rights (configmaps above), so no bind/escalate verbs are needed.
# An autoscaled Ray's autoscaler may get and patch that one Ray: the same rights as above,
# so again no bind/escalate. update: drift repaired; delete: spec.autoscaling turned off.
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["get", "list", "watch", "create", "update", "delete"]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["get", "list", "watch", "create", "update", "delete"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end -}}
