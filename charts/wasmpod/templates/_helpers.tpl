{{/* The release's name for the chart's objects, at most 63 characters. */}}
{{- define "wasmpod.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "wasmpod.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The installer image: registry/repository, then @digest or :tag. */}}
{{- define "wasmpod.image" -}}
{{- $registry := .Values.global.imageRegistry | default .Values.image.registry -}}
{{- $name := .Values.image.repository -}}
{{- if $registry }}{{ $name = printf "%s/%s" $registry $name }}{{ end -}}
{{- if .Values.image.digest -}}
{{ $name }}@{{ .Values.image.digest }}
{{- else -}}
{{ $name }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{/* The label the installer puts on a node once wasmpod runs there. */}}
{{- define "wasmpod.readyLabel" -}}wasmpod.dev/ready{{- end -}}

{{/*
Host paths each layout needs, under /host in the pod: a named layout
mounts only these; auto mounts the host's / to find out which it is.
*/}}
{{- define "wasmpod.hostPaths" -}}
{{- $layout := .Values.node.layout -}}
{{- if eq $layout "containerd" -}}
- {{ dir (.Values.node.configPath | default "/etc/containerd/config.toml") }}
{{- else if eq $layout "k3s" -}}
- /var/lib/rancher/k3s/agent/etc/containerd
{{- else if eq $layout "rke2" -}}
- /var/lib/rancher/rke2/agent/etc/containerd
{{- else if eq $layout "k0s" -}}
- /etc/k0s/containerd.d
{{- else if eq $layout "microk8s" -}}
- /var/snap/microk8s/current/args
{{- end }}
- {{ .Values.node.installDir }}
{{- with .Values.node.binDir }}
- {{ . }}
{{- end }}
{{- /* containerd's socket, for the health check after a restart */}}
{{- if .Values.node.containerdSocket }}
- {{ dir .Values.node.containerdSocket }}
{{- else if eq $layout "containerd" }}
- /run/containerd
{{- else if or (eq $layout "k3s") (eq $layout "rke2") }}
- /run/k3s/containerd
{{- else if eq $layout "k0s" }}
- /run/k0s
{{- else if eq $layout "microk8s" }}
- /var/snap/microk8s/common/run
{{- end }}
{{- end -}}

{{/*
The API server for the chart's pods, where its Service is not reachable
(no kube-proxy): as the kubelet's own variables, which these override.
*/}}
{{- define "wasmpod.apiServerEnv" -}}
{{- with .Values.apiServer.host }}
- name: KUBERNETES_SERVICE_HOST
  value: {{ . | quote }}
- name: KUBERNETES_SERVICE_PORT
  value: {{ $.Values.apiServer.port | quote }}
{{- end }}
{{- end -}}
