{{/* The chart's name, shortened to what a DNS label allows. */}}
{{- define "tenant-registry.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The objects' name: the release's, with the chart's name unless it already holds it. */}}
{{- define "tenant-registry.fullname" -}}
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

{{/* What selects the pods: never changes over a release's life (selectors are immutable). */}}
{{- define "tenant-registry.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tenant-registry.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tenant-registry.labels" -}}
{{ include "tenant-registry.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "tenant-registry.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tenant-registry.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tenant-registry.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* The settings both containers read: the environment and the database. */}}
{{- define "tenant-registry.sharedEnv" -}}
- name: APP_ENV
  value: {{ .Values.appEnv | quote }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ required "database.existingSecret: the Secret holding DATABASE_URL" .Values.database.existingSecret }}
      key: {{ .Values.database.key }}
{{- end }}
