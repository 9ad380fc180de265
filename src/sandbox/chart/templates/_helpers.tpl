{{/* Labels every object of the demo carries; the sandbox server reads objects by part-of. */}}
{{- define "tracktion.labels" -}}
app.kubernetes.io/name: {{ .Values.service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: tracktion
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}
