{{/* Name of the chart, overridable. */}}
{{- define "agent-auth-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name, at most 63 characters (Service names are DNS labels). */}}
{{- define "agent-auth-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Name of objects outside the release namespace (ClusterRole, ClusterRoleBinding, Roles in watched
namespaces): prefixed with the release namespace so two releases never collide.
*/}}
{{- define "agent-auth-operator.scopedName" -}}
{{- printf "%s-%s" .Release.Namespace (include "agent-auth-operator.fullname" .) | trunc 253 | trimSuffix "-" }}
{{- end }}

{{- define "agent-auth-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "agent-auth-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "agent-auth-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "agent-auth-operator.labels" -}}
helm.sh/chart: {{ include "agent-auth-operator.chart" . }}
{{ include "agent-auth-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: agent-auth-operator
{{- end }}

{{- define "agent-auth-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "agent-auth-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "agent-auth-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* The validated gateway URL; fails with what to set when it is missing or malformed. */}}
{{- define "agent-auth-operator.gatewayUrl" -}}
{{- $url := required "gateway.url is required: set it to the public base URL of the gateway as users' browsers reach it, e.g. --set gateway.url=https://connect.example.com (authorization links and the OAuth redirect URI are built from it)" .Values.gateway.url }}
{{- if not (regexMatch "^https?://[^/?#]+" $url) }}
{{- fail (printf "gateway.url must be an absolute http(s) URL such as https://connect.example.com, got %q" $url) }}
{{- end }}
{{- trimSuffix "/" $url }}
{{- end }}

{{/* Host of gateway.url without the port: the default Ingress host. */}}
{{- define "agent-auth-operator.gatewayHost" -}}
{{- $u := urlParse (include "agent-auth-operator.gatewayUrl" .) }}
{{- regexReplaceAll ":[0-9]+$" $u.host "" }}
{{- end }}

{{/* Leader election is on when asked for, and always with more than one replica. */}}
{{- define "agent-auth-operator.leaderElection" -}}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicaCount) 1) }}true{{ else }}false{{ end }}
{{- end }}

{{/* Permissions in every watched namespace (or cluster-wide when no namespace is listed). */}}
{{- define "agent-auth-operator.watchRules" -}}
- apiGroups: [agentauth.dev]
  resources: [connectedaccounts]
  verbs: [get, list, watch, patch, update]
- apiGroups: [agentauth.dev]
  resources: [connectedaccounts/status]
  verbs: [get, patch, update]
- apiGroups: [agentauth.dev]
  resources: [connectedaccounts/finalizers]
  verbs: [update]
- apiGroups: [agentauth.dev]
  resources: [connections]
  verbs: [get, list, watch]
- apiGroups: [agentauth.dev]
  resources: [connections/status]
  verbs: [get, patch, update]
# Agent-facing credential Secrets (labelled app.kubernetes.io/managed-by=agent-auth-operator) and
# reading the client secret a Connection references.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch, create, patch, update, delete]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
{{- end }}
