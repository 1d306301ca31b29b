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

{{/* True in the default `split` mode: the gateway and the controller in Deployments of their own. */}}
{{- define "agent-auth-operator.split" -}}
{{- if eq .Values.mode "split" }}true{{ else }}false{{ end }}
{{- end }}

{{/* Selector labels of one component's pods (split mode): `dict "root" $ "component" "gateway"`. */}}
{{- define "agent-auth-operator.componentSelector" -}}
{{ include "agent-auth-operator.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The controller's ServiceAccount in split mode (in `all` mode the one ServiceAccount). */}}
{{- define "agent-auth-operator.controllerServiceAccountName" -}}
{{- if eq (include "agent-auth-operator.split" .) "true" }}
{{- if .Values.serviceAccount.create }}
{{- default (printf "%s-controller" (include "agent-auth-operator.fullname" .)) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- else }}
{{- include "agent-auth-operator.serviceAccountName" . }}
{{- end }}
{{- end }}

{{/* The gateway's ServiceAccount (split mode only). */}}
{{- define "agent-auth-operator.gatewayServiceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (printf "%s-gateway" (include "agent-auth-operator.fullname" .)) .Values.gateway.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.gateway.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Where the gateway finds the controller's intake: the intake Service's cluster DNS name. */}}
{{- define "agent-auth-operator.intakeUrl" -}}
{{- printf "http://%s-intake.%s.svc:%v" (include "agent-auth-operator.fullname" .) .Release.Namespace .Values.intake.port }}
{{- end }}

{{/* Environment shared by every role: the public URL, the tenancy rules, logs, metrics, the pod. */}}
{{- define "agent-auth-operator.commonEnv" -}}
- name: GATEWAY_URL
  value: {{ include "agent-auth-operator.gatewayUrl" . | quote }}
- name: ADMIN_ADDR
  value: {{ printf "0.0.0.0:%v" .Values.admin.port | quote }}
{{- with .Values.watchNamespaces }}
- name: WATCH_NAMESPACES
  value: {{ uniq . | join "," | quote }}
{{- end }}
- name: CONNECTION_POLICY
  value: {{ .Values.connectionPolicy | quote }}
{{- with .Values.connectionHostAllow }}
- name: CONNECTION_HOST_ALLOW
  value: {{ uniq . | join "," | quote }}
{{- end }}
{{- with .Values.egressAllow }}
- name: EGRESS_ALLOW
  value: {{ uniq . | join "," | quote }}
{{- end }}
{{- with .Values.allowedRedirectOrigins }}
- name: ALLOWED_REDIRECT_ORIGINS
  value: {{ uniq . | join "," | quote }}
{{- end }}
- name: METRICS_AUTH
  value: {{ .Values.metrics.secure | quote }}
- name: METRICS_ACCOUNT_LABELS
  value: {{ .Values.metrics.accountLabels | quote }}
- name: LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
- name: LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- end }}

{{/* Environment of the processes that run the controllers (`controller` and `all`). */}}
{{- define "agent-auth-operator.controllerEnv" -}}
- name: BROKER_ADDR
  value: {{ printf "0.0.0.0:%v" .Values.broker.port | quote }}
- name: BROKER_AUDIENCE
  value: {{ .Values.broker.audience | quote }}
- name: LEADER_ELECTION
  value: {{ include "agent-auth-operator.leaderElection" . | quote }}
- name: REFRESH_CONCURRENCY
  value: {{ .Values.refreshConcurrency | quote }}
{{- with .Values.encryption.keks }}
- name: KEKS
  value: {{ include "agent-auth-operator.keks" $ | quote }}
{{- end }}
{{- with .Values.encryption.primary }}
- name: KEK_PRIMARY
  value: {{ . | quote }}
{{- end }}
{{- end }}

{{/* `ID=PATH,...` of encryption.keks; fails when the primary names no listed key. */}}
{{- define "agent-auth-operator.keks" -}}
{{- $pairs := list }}
{{- $ids := list }}
{{- range .Values.encryption.keks }}
{{- $pairs = append $pairs (printf "%s=%s" .id .path) }}
{{- $ids = append $ids .id }}
{{- end }}
{{- if and .Values.encryption.primary (not (has .Values.encryption.primary $ids)) }}
{{- fail (printf "encryption.primary %q is not the id of any key in encryption.keks (%s)" .Values.encryption.primary (join ", " $ids)) }}
{{- end }}
{{- if and (gt (len $ids) 1) (not .Values.encryption.primary) }}
{{- fail "encryption.primary is required with more than one key in encryption.keks: set it to the id new records are sealed with" }}
{{- end }}
{{- join "," $pairs }}
{{- end }}

{{/* Scheduling and pod-level settings shared by every Deployment. */}}
{{- define "agent-auth-operator.podPlacement" -}}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The probes and the restricted container security context shared by every Deployment. */}}
{{- define "agent-auth-operator.containerChecks" -}}
{{- with .Values.livenessProbe }}
livenessProbe:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.readinessProbe }}
readinessProbe:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
{{- end }}

{{/* Egress every component needs: the API server (networkPolicy.apiServer) and cluster DNS. */}}
{{- define "agent-auth-operator.egressBase" -}}
{{- $api := .Values.networkPolicy.apiServer }}
# The API server (not a pod: its addresses, `kubectl get endpointslices -n default kubernetes`).
- to:
    {{- range $api.cidrs }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  ports:
    {{- range $api.ports }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
# Cluster DNS.
- to:
    {{- toYaml .Values.networkPolicy.dns.to | nindent 4 }}
  ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- end }}
