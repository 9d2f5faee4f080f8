{{/*
Names. With release "spotguard" every name equals the kustomize base's.
*/}}
{{- define "spotguard.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else if contains "spotguard" .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-spotguard" .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "spotguard.policyConfigMap" -}}{{ include "spotguard.fullname" . }}-policy{{- end -}}
{{- define "spotguard.tlsSecret" -}}{{ include "spotguard.fullname" . }}-tls{{- end -}}
{{- define "spotguard.certsName" -}}{{ include "spotguard.fullname" . }}-certs{{- end -}}

{{/*
Labels: the kustomize base's (name, component, part-of) plus Helm's usual ones. Selectors
use name and component only, as the kustomize base does, so either install can take the
other's objects over (a Deployment's selector cannot change).
*/}}
{{- define "spotguard.labels" -}}
app.kubernetes.io/name: spotguard
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
app.kubernetes.io/part-of: spotguard
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "spotguard.selectorLabels" -}}
app.kubernetes.io/name: spotguard
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "spotguard.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ $tag }}
{{- end -}}
{{- end -}}

{{/*
Every spot node label of every preset spotguard knows: spotguard's own pods never run on
spot capacity, whatever the providers (an admission webhook reclaimed with 30 s notice
takes admission down with the training jobs it protects). NotIn also matches nodes
without the label.
*/}}
{{- define "spotguard.onDemandAffinity" -}}
nodeAffinity:
  requiredDuringSchedulingIgnoredDuringExecution:
    nodeSelectorTerms:
      - matchExpressions:
          - {key: eks.amazonaws.com/capacityType, operator: NotIn, values: [SPOT]}
          - {key: karpenter.sh/capacity-type, operator: NotIn, values: [spot]}
          - {key: cloud.google.com/gke-spot, operator: NotIn, values: ["true"]}
          - {key: cloud.google.com/gke-preemptible, operator: NotIn, values: ["true"]}
          - {key: kubernetes.azure.com/scalesetpriority, operator: NotIn, values: [spot]}
          - {key: node.kubernetes.io/lifecycle, operator: NotIn, values: [spot]}
          - {key: lifecycle, operator: NotIn, values: [spot]}
{{- end -}}

{{- define "spotguard.tolerations" -}}
- key: CriticalAddonsOnly
  operator: Exists
{{- with .Values.tolerations }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "spotguard.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
{{- if .fsGroup }}
fsGroup: 65532
{{- end }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "spotguard.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/*
Which provider each preset belongs to: presets of one provider share a notice window.
(policies/presets.py; a test keeps the two equal.)
*/}}
{{- define "spotguard.presetProviders" -}}
eks: aws
karpenter: aws
gke: gcp
aks: azure
generic: generic
{{- end -}}

{{/*
The policy document: what the values say, over spotguard's built-in defaults. Refuses a
missing provider, and providers with different notice windows without a stated window.
*/}}
{{- define "spotguard.policy" -}}
{{- $v := .Values -}}
{{- if not $v.providers -}}
{{- fail "\n\nproviders is required: name your spot capacity, e.g. --set 'providers={eks,karpenter}' (EKS and Karpenter), {gke}, {aks} or {generic}.\nspotguard does not guess: the providers' notice window becomes the grace period and the\ncheckpoint budget of every fault-tolerant pod (AWS 110 s, GKE 15 s, AKS 30 s)." -}}
{{- end -}}
{{- $providerOf := include "spotguard.presetProviders" . | fromYaml -}}
{{- $families := list -}}
{{- range $v.providers -}}
{{- $families = append $families (get $providerOf .) | uniq -}}
{{- end -}}
{{- if and (gt (len $families) 1) (not $v.noticeWindowSeconds) -}}
{{- fail (printf "\n\nproviders %v span %d providers (%s) whose notice windows differ: set noticeWindowSeconds.\nspotguard will not silently give every fault-tolerant pod the shortest window." $v.providers (len $families) (join ", " $families)) -}}
{{- end -}}
{{- range $key := list "mode" "rules" "workloads" -}}
{{- if hasKey $v.policy $key -}}
{{- fail (printf "policy.%s: set it with the chart's own value (mode, rules, extraKinds), so the webhook registrations follow it" $key) -}}
{{- end -}}
{{- end -}}
{{- if hasKey ($v.policy.spotNodes | default dict) "presets" -}}
{{- fail "policy.spotNodes.presets: set providers instead" -}}
{{- end -}}
{{- $spot := dict "presets" $v.providers -}}
{{- with $v.noticeWindowSeconds }}{{ $_ := set $spot "noticeWindowSeconds" (int .) }}{{ end -}}
{{- $doc := dict "apiVersion" "spotguard.dev/v1alpha1" "kind" "SpotPolicy" "mode" $v.mode "spotNodes" $spot -}}
{{- $excluded := include "spotguard.excludedNamespaces" . | fromYamlArray -}}
{{- $builtin := list "kube-system" "kube-public" "kube-node-lease" "spotguard-system" -}}
{{- if ne (sortAlpha $excluded | join ",") (sortAlpha $builtin | join ",") -}}
{{- $_ := set $doc "namespaces" (dict "exclude" $excluded) -}}
{{- end -}}
{{- $selector := dict -}}
{{- with $v.faultTolerant.matchLabels }}{{ $_ := set $selector "matchLabels" . }}{{ end -}}
{{- with $v.faultTolerant.matchExpressions }}{{ $_ := set $selector "matchExpressions" . }}{{ end -}}
{{- with $v.faultTolerant.operatorPresets }}{{ $_ := set $selector "operatorPresets" . }}{{ end -}}
{{- if not $selector -}}
{{- fail "faultTolerant: name matchLabels, matchExpressions or operatorPresets (an empty selector would opt every pod in)" -}}
{{- end -}}
{{- $_ := set $doc "faultTolerant" $selector -}}
{{- with $v.rules -}}
{{- $rules := dict -}}
{{- range $rule, $mode := . }}{{ $_ := set $rules $rule (dict "mode" $mode) }}{{ end -}}
{{- $_ := set $doc "rules" $rules -}}
{{- end -}}
{{- with $v.extraKinds }}{{ $_ := set $doc "workloads" (dict "extraKinds" .) }}{{ end -}}
{{- toYaml (mergeOverwrite (deepCopy $v.policy) $doc) -}}
{{- end -}}

{{/*
Namespaces never reviewed: the control plane's, the release's own, and any the values add.
The policy skips them and the webhooks' namespaceSelector keeps them from being sent.
*/}}
{{- define "spotguard.excludedNamespaces" -}}
{{- concat (list "kube-system" "kube-public" "kube-node-lease" .Release.Namespace) .Values.webhook.excludeNamespaces | uniq | toYaml -}}
{{- end -}}

{{/*
The certificate job's pod (Job and CronJob): `spotguard certs ensure` under its own
ServiceAccount, hardened like the server, never on spot.
*/}}
{{- define "spotguard.certsPod" -}}
metadata:
  labels:
    {{- include "spotguard.labels" (dict "root" . "component" "certs") | nindent 4 }}
spec:
  serviceAccountName: {{ include "spotguard.certsName" . }}
  automountServiceAccountToken: true
  enableServiceLinks: false
  restartPolicy: OnFailure
  securityContext:
    {{- include "spotguard.podSecurityContext" dict | nindent 4 }}
  affinity:
    {{- include "spotguard.onDemandAffinity" . | nindent 4 }}
  tolerations:
    {{- include "spotguard.tolerations" . | nindent 4 }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: certs
      image: {{ include "spotguard.image" . }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args:
        - certs
        - ensure
        - --namespace
        - {{ .Release.Namespace }}
        - --secret
        - {{ include "spotguard.tlsSecret" . }}
        - --service
        - {{ include "spotguard.fullname" . }}
        - --webhook-config
        - {{ include "spotguard.fullname" . }}
      resources:
        {{- toYaml .Values.certificates.job.resources | nindent 8 }}
      securityContext:
        {{- include "spotguard.containerSecurityContext" . | nindent 8 }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: 16Mi
{{- end -}}
