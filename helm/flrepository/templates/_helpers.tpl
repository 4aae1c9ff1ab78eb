{{/* Names and labels shared by every template. */}}

{{- define "flrepository.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release-derived prefix of every resource (the ConfigMap excepted: repository-configmap). */}}
{{- define "flrepository.fullname" -}}
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

{{- define "flrepository.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "flrepository.labels" -}}
app.kubernetes.io/name: {{ include "flrepository.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{ include "flrepository.metaLabels" . }}
{{- end }}

{{/* The labels beyond the selector ones; pod templates add them to their selector labels. */}}
{{- define "flrepository.metaLabels" -}}
helm.sh/chart: {{ include "flrepository.chart" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: flrepository
{{- end }}

{{/* API pods. */}}
{{- define "flrepository.selectorLabels" -}}
app.kubernetes.io/name: {{ include "flrepository.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: api
{{- end }}

{{/* The bundled MongoDB. */}}
{{- define "flrepository.mongodb.fullname" -}}
{{- printf "%s-mongodb" (include "flrepository.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The label that lets a pod through the MongoDB NetworkPolicy (Helm release names are at most 53 characters). */}}
{{- define "flrepository.mongodb.clientLabel" -}}
flrepository/mongodb-client: {{ .Release.Name | quote }}
{{- end }}

{{- define "flrepository.mongodb.selectorLabels" -}}
app.kubernetes.io/name: {{ include "flrepository.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: mongodb
{{- end }}

{{/* The Secret holding the MongoDB credentials and the API's connection string. */}}
{{- define "flrepository.secretName" -}}
{{- printf "%s-mongodb" (include "flrepository.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The Secret holding the bundled MongoDB's passwords: mongodb.auth.existingSecret, else the chart's. */}}
{{- define "flrepository.mongodb.passwordSecretName" -}}
{{- .Values.mongodb.auth.existingSecret | default (include "flrepository.secretName" .) }}
{{- end }}

{{/* The bundled MongoDB's host name inside the cluster. */}}
{{- define "flrepository.mongodb.host" -}}
{{- printf "%s.%s.svc" (include "flrepository.mongodb.fullname" .) .Release.Namespace }}
{{- end }}

{{/* Where the API's FLREPO_MONGODB_URL comes from: name and key of a Secret. */}}
{{- define "flrepository.mongodbUrlSecretName" -}}
{{- if and (not .Values.mongodb.enabled) .Values.externalMongodb.existingSecret }}
{{- .Values.externalMongodb.existingSecret }}
{{- else }}
{{- include "flrepository.secretName" . }}
{{- end }}
{{- end }}

{{- define "flrepository.mongodbUrlSecretKey" -}}
{{- if and (not .Values.mongodb.enabled) .Values.externalMongodb.existingSecret }}
{{- .Values.externalMongodb.existingSecretKey }}
{{- else }}
{{- "mongodb-url" }}
{{- end }}
{{- end }}

{{/*
A password: the value given, else the one already in the release's Secret (so upgrades keep it),
else a new random one. Call with (list $ "valueGiven" "secret-key").
*/}}
{{- define "flrepository.password" -}}
{{- $root := index . 0 }}
{{- $given := index . 1 }}
{{- $key := index . 2 }}
{{- if $given }}
{{- $given }}
{{- else }}
{{- $existing := lookup "v1" "Secret" $root.Release.Namespace (include "flrepository.secretName" $root) }}
{{- if and $existing (index ($existing.data | default dict) $key) }}
{{- index $existing.data $key | b64dec }}
{{- else }}
{{- randAlphaNum 32 }}
{{- end }}
{{- end }}
{{- end }}

{{/* API keys: the Secret holding the keys file, and the file's name (also its key in the Secret). */}}
{{- define "flrepository.auth.keysSecretName" -}}
{{- if .Values.auth.existingSecret }}
{{- .Values.auth.existingSecret }}
{{- else }}
{{- printf "%s-api-keys" (include "flrepository.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "flrepository.auth.keysFileName" -}}
{{- if .Values.auth.existingSecret }}
{{- .Values.auth.existingSecretKey }}
{{- else }}
{{- "api-keys.yaml" }}
{{- end }}
{{- end }}

{{/* "true" when the chart makes the keys file itself (auth on, no existingSecret). */}}
{{- define "flrepository.auth.chartKeys" -}}
{{- if and .Values.auth.enabled (not .Values.auth.existingSecret) }}true{{ end }}
{{- end }}

{{/* "true" when the chart generates an admin key (auth on, neither keys nor existingSecret given). */}}
{{- define "flrepository.auth.generated" -}}
{{- if and (include "flrepository.auth.chartKeys" .) (not .Values.auth.keys) }}true{{ end }}
{{- end }}

{{/* The Secret holding the generated admin key in plain (for the operator), under key api-key. */}}
{{- define "flrepository.auth.adminKeySecretName" -}}
{{- printf "%s-admin-key" (include "flrepository.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The generated admin key: the one already in the release's admin-key Secret (so upgrades keep it),
else a new random one. Made once per render and remembered in .Values.auth, so the keys file, the
admin-key Secret and the pod's checksum annotation all see the same key.
*/}}
{{- define "flrepository.auth.adminKey" -}}
{{- if not (hasKey .Values.auth "generatedAdminKey") }}
{{- $key := "" }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "flrepository.auth.adminKeySecretName" .) }}
{{- if and $existing (index ($existing.data | default dict) "api-key") }}
{{- $key = index $existing.data "api-key" | b64dec }}
{{- else }}
{{- $key = printf "flr_%s" (randAlphaNum 43) }}
{{- end }}
{{- $_ := set .Values.auth "generatedAdminKey" $key }}
{{- end }}
{{- index .Values.auth "generatedAdminKey" }}
{{- end }}

{{/* The keys file the chart makes: auth.keys as given, else one admin entry for the generated key. */}}
{{- define "flrepository.auth.keysFile" -}}
{{- $entries := list }}
{{- if .Values.auth.keys }}
{{- range .Values.auth.keys }}
{{- $entries = append $entries (dict "id" (toString .id) "role" .role "sha256" (lower .sha256)) }}
{{- end }}
{{- else }}
{{- $entries = list (dict "id" "admin" "role" "admin" "sha256" (include "flrepository.auth.adminKey" . | sha256sum)) }}
{{- end }}
{{- toYaml $entries }}
{{- end }}

{{/* Fail early on values that cannot work. */}}
{{- define "flrepository.validate" -}}
{{- if and (not .Values.mongodb.enabled) (not .Values.externalMongodb.existingSecret) (not .Values.externalMongodb.url) }}
{{- fail "mongodb.enabled is false: set externalMongodb.existingSecret (or externalMongodb.url) to the MongoDB to use" }}
{{- end }}
{{- if and (eq .Values.service.type "NodePort") .Values.service.nodePort (or (lt (int .Values.service.nodePort) 30000) (gt (int .Values.service.nodePort) 32767)) }}
{{- fail "service.nodePort must be within 30000-32767 (the default NodePort range)" }}
{{- end }}
{{- if dig "existingSecret" "" (.Values.apiKeys | default dict) }}
{{- fail "apiKeys.existingSecret is now auth.existingSecret (and apiKeys.key auth.existingSecretKey); see values.yaml" }}
{{- end }}
{{- range $name := list "FLREPO_API_KEYS_FILE" "FLREPO_ANONYMOUS_ROLE" }}
{{- if hasKey ($.Values.config.extra | default dict) $name }}
{{- fail (printf "config.extra.%s: set authentication with auth.* instead (auth.keys, auth.existingSecret, auth.anonymousRole)" $name) }}
{{- end }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled .Values.auth.enabled (not .Values.config.metricsPublic) (not .Values.metrics.serviceMonitor.keySecret.name) }}
{{- fail "metrics.serviceMonitor.enabled: /metrics needs a reader key; set metrics.serviceMonitor.keySecret.name (a Secret with a reader key) or config.metricsPublic=true" }}
{{- end }}
{{- if and .Values.mongodb.auth.existingSecret (or .Values.mongodb.auth.password .Values.mongodb.auth.rootPassword) }}
{{- fail "mongodb.auth.existingSecret and mongodb.auth.password/rootPassword are both set: give the passwords one way only" }}
{{- end }}
{{- if and .Values.auth.existingSecret .Values.auth.keys }}
{{- fail "auth.keys and auth.existingSecret are both set: give the keys one way only" }}
{{- end }}
{{- $ids := dict }}
{{- range .Values.auth.keys }}
{{- if hasKey $ids (toString .id) }}
{{- fail (printf "auth.keys: id %q appears twice" (toString .id)) }}
{{- end }}
{{- $_ := set $ids (toString .id) true }}
{{- end }}
{{- end }}

{{/* Federated training (fl.*): the task id as a name part (lower-case letters, digits, -). */}}
{{- define "flrepository.fl.task" -}}
{{- regexReplaceAll "[^a-z0-9-]+" (lower (toString .Values.fl.taskId)) "-" | trimAll "-" }}
{{- end }}

{{/* Prefix of the task's resources: <release>-<task>. */}}
{{- define "flrepository.fl.prefix" -}}
{{- printf "%s-%s" (include "flrepository.fullname" .) (include "flrepository.fl.task" .) | trunc 48 | trimSuffix "-" }}
{{- end }}

{{/* The collector's Job and Service. */}}
{{- define "flrepository.fl.collectorName" -}}
{{- printf "%s-collector" (include "flrepository.fl.prefix" .) }}
{{- end }}

{{- define "flrepository.fl.collectorSelectorLabels" -}}
app.kubernetes.io/name: {{ include "flrepository.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: fl-collector
flrepository/task: {{ include "flrepository.fl.task" . | quote }}
{{- end }}

{{/* What the collector publishes for its participants: fl.collector.advertise, else its Service. */}}
{{- define "flrepository.fl.advertise" -}}
{{- if .Values.fl.collector.advertise }}
{{- .Values.fl.collector.advertise }}
{{- else }}
{{- printf "%s.%s.svc:%d" (include "flrepository.fl.collectorName" .) .Release.Namespace (int .Values.fl.collector.port) }}
{{- end }}
{{- end }}

{{- define "flrepository.fl.image" -}}
"{{ .Values.fl.image.repository }}:{{ .Values.fl.image.tag | default .Chart.AppVersion }}"
{{- end }}

{{/* The environment of every FL pod: the repository, its key and the verify keys from Secrets. */}}
{{- define "flrepository.fl.env" -}}
- name: FLREPO_URL
  value: {{ .Values.fl.repositoryUrl | default (printf "http://%s.%s.svc:%d" (include "flrepository.fullname" .) .Release.Namespace (int .Values.service.port)) | quote }}
{{- if .Values.fl.apiKey.existingSecret }}
- name: FLREPO_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.fl.apiKey.existingSecret }}
      key: {{ .Values.fl.apiKey.existingSecretKey }}
{{- end }}
{{- if .Values.fl.trustedKeys.existingSecret }}
- name: FLREPO_TRUSTED_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ .Values.fl.trustedKeys.existingSecret }}
      key: {{ .Values.fl.trustedKeys.existingSecretKey }}
{{- end }}
- name: FLREPO_LOG_LEVEL
  value: {{ .Values.config.logLevel | quote }}
{{- if .Values.fl.collector.insecure }}
- name: FLREPO_FL_INSECURE
  value: "1"
{{- end }}
# The root filesystem is read-only: Flower's and the libraries' files go to the /tmp emptyDir.
- name: HOME
  value: /tmp
{{- end }}

{{/* Fail early on fl.* values that cannot work. */}}
{{- define "flrepository.fl.validate" -}}
{{- if .Values.fl.enabled }}
{{- if not (include "flrepository.fl.task" .) }}
{{- fail "fl.enabled is true: set fl.taskId to the task to run (create it first: POST /tasks)" }}
{{- end }}
{{- if and .Values.fl.collector.insecure .Values.fl.collector.tls.existingSecret }}
{{- fail "fl.collector.insecure and fl.collector.tls.existingSecret exclude each other" }}
{{- end }}
{{- $names := dict }}
{{- range .Values.fl.localExecutions }}
{{- if hasKey $names (toString .name) }}
{{- fail (printf "fl.localExecutions: name %q appears twice" (toString .name)) }}
{{- end }}
{{- $_ := set $names (toString .name) true }}
{{- if eq (len (compact (list (.existingClaim | default "") (.hostPath | default "")))) 1 | not }}
{{- fail (printf "fl.localExecutions %s: give its data volume as exactly one of existingClaim or hostPath" (toString .name)) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
