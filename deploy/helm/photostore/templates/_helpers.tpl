{{/*
Chart name, overridable with nameOverride.
*/}}
{{- define "photostore.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: the prefix of every resource. Kept to 40 characters so that the longest suffix
("-weaviate-headless", and the StatefulSet pod/claim names built on it) stays within the limits.
*/}}
{{- define "photostore.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "photostore.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The five photostore components, in start order. The Deployment, Service and PDB templates
range over this list.
*/}}
{{- define "photostore.components" -}}
{{- list "ingest" "embed" "search" "worker" "gateway" | toJson }}
{{- end }}

{{/*
Selector labels of one component: (dict "ctx" $ "component" "ingest").
*/}}
{{- define "photostore.selectorLabels" -}}
app.kubernetes.io/name: {{ include "photostore.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Standard labels; with "component" in the dict, also the component label.
*/}}
{{- define "photostore.labels" -}}
helm.sh/chart: {{ include "photostore.chart" .ctx }}
app.kubernetes.io/name: {{ include "photostore.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- end }}

{{- define "photostore.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "photostore.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "photostore.configMapName" -}}
{{- include "photostore.fullname" . }}-config
{{- end }}

{{- define "photostore.secretName" -}}
{{- default (printf "%s-secrets" (include "photostore.fullname" .)) .Values.secrets.existingSecret }}
{{- end }}

{{- define "photostore.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
Cluster DNS name of a Service of this release: (dict "ctx" $ "service" "ingest").
*/}}
{{- define "photostore.serviceHost" -}}
{{- printf "%s-%s.%s.svc.%s" (include "photostore.fullname" .ctx) .service .ctx.Release.Namespace .ctx.Values.clusterDomain }}
{{- end }}

{{/*
gRPC target of a component: its headless Service through the dns resolver, so the client
round-robins over every ready replica: (dict "ctx" $ "component" "ingest").
*/}}
{{- define "photostore.grpcTarget" -}}
{{- $port := (index .ctx.Values .component).port }}
{{- printf "dns:///%s:%v" (include "photostore.serviceHost" (dict "ctx" .ctx "service" .component)) $port }}
{{- end }}

{{/*
Replicas a component runs with at least: the HPA's minReplicas for the autoscaled worker.
*/}}
{{- define "photostore.minReplicas" -}}
{{- $c := index .ctx.Values .component }}
{{- if and (eq .component "worker") $c.autoscaling.enabled }}
{{- $c.autoscaling.minReplicas }}
{{- else }}
{{- $c.replicas }}
{{- end }}
{{- end }}

{{/*
Affinity of a component: its own, else the defaultPodAntiAffinity preset (by hostname).
*/}}
{{- define "photostore.affinity" -}}
{{- $c := index .ctx.Values .component }}
{{- $preset := .ctx.Values.defaultPodAntiAffinity }}
{{- if $c.affinity }}
{{- toYaml $c.affinity }}
{{- else if eq $preset "soft" }}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "photostore.selectorLabels" . | nindent 12 }}
{{- else if eq $preset "hard" }}
podAntiAffinity:
  requiredDuringSchedulingIgnoredDuringExecution:
    - topologyKey: kubernetes.io/hostname
      labelSelector:
        matchLabels:
          {{- include "photostore.selectorLabels" . | nindent 10 }}
{{- end }}
{{- end }}

{{/*
A component's topologySpreadConstraints; each one without a labelSelector gets the
component's selector labels.
*/}}
{{- define "photostore.topologySpreadConstraints" -}}
{{- $c := index .ctx.Values .component }}
{{- $selector := dict "matchLabels" (include "photostore.selectorLabels" . | fromYaml) }}
{{- $out := list }}
{{- range $c.topologySpreadConstraints }}
{{- $out = append $out (merge (deepCopy .) (dict "labelSelector" $selector)) }}
{{- end }}
{{- toYaml $out }}
{{- end }}

{{/*
storageClassName of a claim from a persistence block: omitted when empty, "" for "-".
*/}}
{{- define "photostore.storageClass" -}}
{{- if eq .storageClass "-" -}}
storageClassName: ""
{{- else if .storageClass -}}
storageClassName: {{ .storageClass | quote }}
{{- end }}
{{- end }}

{{/*
Pod securityContext of an engine: (dict "uid" 1000). The uid is the image's own user.
*/}}
{{- define "photostore.engine.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .uid }}
fsGroup: {{ .uid }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
Container securityContext of an engine: (dict "readOnlyRootFilesystem" true).
*/}}
{{- define "photostore.engine.securityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: {{ .readOnlyRootFilesystem }}
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
{{- end }}

{{/*
Common pod spec fields of an engine StatefulSet: (dict "ctx" $ "component" "kafka").
*/}}
{{- define "photostore.engine.podCommon" -}}
{{- $e := index .ctx.Values.engines .component -}}
serviceAccountName: {{ include "photostore.serviceAccountName" .ctx }}
automountServiceAccountToken: false
enableServiceLinks: false
{{- with .ctx.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $e.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $e.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
volumeClaimTemplates of an engine StatefulSet: one claim "data".
*/}}
{{- define "photostore.engine.volumeClaimTemplates" -}}
{{- $e := index .ctx.Values.engines .component -}}
volumeClaimTemplates:
  - apiVersion: v1
    kind: PersistentVolumeClaim
    metadata:
      name: data
      labels:
        {{- include "photostore.selectorLabels" (dict "ctx" .ctx "component" .component) | nindent 8 }}
    spec:
      accessModes: ["ReadWriteOnce"]
      {{- with include "photostore.storageClass" $e.persistence }}
      {{ . }}
      {{- end }}
      resources:
        requests:
          storage: {{ $e.persistence.size }}
{{- end }}

{{/*
A value of the chart's Secret: (dict "value" .Values.secrets.x "existing" <data of the
deployed Secret> "key" "PHOTOSTORE_X" "length" 48). The given value wins, then the deployed
Secret's (so generated values survive upgrades), then randAlphaNum of "length" (0: "").
*/}}
{{- define "photostore.secretValue" -}}
{{- if .value }}
{{- .value }}
{{- else if get .existing .key }}
{{- get .existing .key | b64dec }}
{{- else if .length }}
{{- randAlphaNum (int .length) }}
{{- end }}
{{- end }}
