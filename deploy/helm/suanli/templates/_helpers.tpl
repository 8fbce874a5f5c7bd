{{/*
Helpers shared by every template.

Invariants:
- Every object is named "<fullname>-<component>", fullname being the release name (or
  fullnameOverride), so names are predictable: <release>-api, <release>-postgresql,
  <release>-ray (KubeRay then names the head Service <release>-ray-head-svc).
- Every object carries suanli.labels: app.kubernetes.io/name, instance, version, component,
  managed-by and helm.sh/chart; selectors use only the stable subset (name, instance, component).
*/}}

{{- define "suanli.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "suanli.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- end }}

{{- define "suanli.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels. Call with (dict "ctx" $ "component" "api"). */}}
{{- define "suanli.selectorLabels" -}}
app.kubernetes.io/name: {{ include "suanli.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Standard labels. Call with (dict "ctx" $ "component" "api"). */}}
{{- define "suanli.labels" -}}
{{ include "suanli.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: suanli
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
helm.sh/chart: {{ include "suanli.chart" .ctx }}
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The suanli image reference. */}}
{{- define "suanli.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The image of the Ray head and workers (the suanli image unless overridden). */}}
{{- define "suanli.rayImage" -}}
{{- $repo := default .Values.image.repository .Values.ray.image.repository }}
{{- $tag := default (default .Chart.AppVersion .Values.image.tag) .Values.ray.image.tag }}
{{- printf "%s:%s" $repo $tag }}
{{- end }}

{{/* ServiceAccount name of a component. Call with (dict "ctx" $ "component" "api" "sa" .Values.api.serviceAccount). */}}
{{- define "suanli.serviceAccountName" -}}
{{- if .sa.create }}
{{- default (printf "%s-%s" (include "suanli.fullname" .ctx) .component) .sa.name }}
{{- else }}
{{- default "default" .sa.name }}
{{- end }}
{{- end }}

{{/* Secret and key holding SUANLI_DATABASE_URL. Fails when no database is configured. */}}
{{- define "suanli.databaseSecretName" -}}
{{- if .Values.database.existingSecret }}
{{- .Values.database.existingSecret }}
{{- else if or .Values.database.url .Values.postgresql.enabled }}
{{- printf "%s-database" (include "suanli.fullname" .) }}
{{- else }}
{{- fail "postgresql.enabled is false: set database.url (e.g. postgresql+psycopg://user:password@host:5432/suanli) or database.existingSecret (a Secret with the URL under database.existingSecretKey)" }}
{{- end }}
{{- end }}

{{- define "suanli.databaseSecretKey" -}}
{{- if .Values.database.existingSecret }}{{ .Values.database.existingSecretKey }}{{ else }}url{{ end }}
{{- end }}

{{/* Name of the bundled PostgreSQL Service (also its host name in the database URL). */}}
{{- define "suanli.postgresqlHost" -}}
{{- printf "%s-postgresql" (include "suanli.fullname" .) }}
{{- end }}

{{/* Ray address the scheduler connects to. */}}
{{- define "suanli.rayAddress" -}}
{{- if .Values.ray.enabled }}
{{- printf "ray://%s-ray-head-svc:10001" (include "suanli.fullname" .) }}
{{- else }}
{{- required "ray.enabled is false: set ray.address (e.g. ray://ray-head.ray.svc:10001)" .Values.ray.address }}
{{- end }}
{{- end }}

{{/* Name of the Secret with the agent token. */}}
{{- define "suanli.agentTokenSecret" -}}
{{- default (printf "%s-agent-token" (include "suanli.fullname" .)) .Values.agent.tokenSecret.name }}
{{- end }}

{{/* Name of the shared /data claim. */}}
{{- define "suanli.dataClaim" -}}
{{- default (printf "%s-data" (include "suanli.fullname" .)) .Values.persistence.existingClaim }}
{{- end }}

{{/* The /data volume of a pod: the shared claim, or an emptyDir when persistence is off. */}}
{{- define "suanli.dataVolume" -}}
- name: data
{{- if or .Values.persistence.enabled .Values.persistence.existingClaim }}
  persistentVolumeClaim:
    claimName: {{ include "suanli.dataClaim" . }}
{{- else }}
  emptyDir: {}
{{- end }}
{{- end }}

{{/* Environment shared by the api and the scheduler. */}}
{{- define "suanli.commonEnv" -}}
- name: SUANLI_DATA_DIR
  value: /data
- name: SUANLI_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "suanli.databaseSecretName" . }}
      key: {{ include "suanli.databaseSecretKey" . }}
{{- end }}
