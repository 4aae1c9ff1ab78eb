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

{{/* Fail early on values that cannot work. */}}
{{- define "flrepository.validate" -}}
{{- if and (not .Values.mongodb.enabled) (not .Values.externalMongodb.existingSecret) (not .Values.externalMongodb.url) }}
{{- fail "mongodb.enabled is false: set externalMongodb.existingSecret (or externalMongodb.url) to the MongoDB to use" }}
{{- end }}
{{- if and (eq .Values.service.type "NodePort") .Values.service.nodePort (or (lt (int .Values.service.nodePort) 30000) (gt (int .Values.service.nodePort) 32767)) }}
{{- fail "service.nodePort must be within 30000-32767 (the default NodePort range)" }}
{{- end }}
{{- end }}
