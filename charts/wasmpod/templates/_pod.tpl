{{/*
The pod spec of the node installer, which runs `install` (daemonset.yaml),
and of the uninstall hook's, which runs `uninstall` (uninstall.yaml) on
the same nodes with the same host paths and privileges:
include "wasmpod.nodePod" (dict "root" $ "command" "install").
*/}}
{{- define "wasmpod.nodePod" -}}
{{- $root := .root -}}
{{- $command := .command -}}
{{- $restart := $root.Values.node.restart -}}
{{- $auto := eq $root.Values.node.layout "auto" -}}
# The host's processes: to enter its mount namespace for systemctl,
# or to find containerd for a signal. Not needed without a restart.
hostPID: {{ ne $restart "none" }}
{{- if $root.Values.installer.hostNetwork }}
hostNetwork: true
dnsPolicy: ClusterFirstWithHostNet
{{- end }}
serviceAccountName: {{ include "wasmpod.fullname" $root }}-node-installer
# For the node's ready label and events (rbac.yaml).
automountServiceAccountToken: true
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $root.Values.installer.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $root.Values.installer.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $root.Values.installer.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $root.Values.installer.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
terminationGracePeriodSeconds: 10
containers:
  - name: {{ $command }}er
    image: {{ include "wasmpod.image" $root }}
    imagePullPolicy: {{ $root.Values.image.pullPolicy }}
    command: [/wasmpod-node-installer]
    args:
      - --host-root=/host
      {{- if not $auto }}
      - --layout={{ $root.Values.node.layout }}
      {{- end }}
      {{- with $root.Values.node.configPath }}
      - --config={{ . }}
      {{- end }}
      - --config-version={{ $root.Values.node.configVersion }}
      {{- with $root.Values.node.containerdSocket }}
      - --containerd-socket={{ . }}
      {{- end }}
      - --health-timeout={{ $root.Values.node.healthTimeout }}
      - --install-dir={{ $root.Values.node.installDir }}
      - --bin-dir={{ $root.Values.node.binDir }}
      - --restart={{ $restart }}
      - --stay
      - --ready-file=/run/wasmpod-installer/ready
      - {{ $command }}
    env:
      # The node to label: the one this pod runs on.
      - name: NODE_NAME
        valueFrom:
          fieldRef:
            fieldPath: spec.nodeName
      {{- include "wasmpod.apiServerEnv" $root | nindent 6 }}
    securityContext:
      {{- if eq $restart "systemd" }}
      # Entering the host's mount namespace (setns) to run systemctl
      # takes CAP_SYS_ADMIN; nothing less does it.
      privileged: true
      {{- else }}
      privileged: false
      allowPrivilegeEscalation: false
      capabilities:
        drop: [ALL]
      {{- end }}
      # Root, to write containerd's root-owned config and /opt.
      runAsUser: 0
      runAsNonRoot: false
      readOnlyRootFilesystem: true
    {{- with $root.Values.installer.resources }}
    resources:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    # Ready once the node is done: a rolling update moves on to the next
    # node only then (maxUnavailable is the number of containerd restarts
    # at a time).
    readinessProbe:
      exec:
        command: [/wasmpod-node-installer, --ready-file=/run/wasmpod-installer/ready, ready]
      periodSeconds: 2
      failureThreshold: 1
    volumeMounts:
      - name: ready
        mountPath: /run/wasmpod-installer
      {{- if $auto }}
      - name: host
        mountPath: /host
      {{- else }}
      {{- range $i, $path := include "wasmpod.hostPaths" $root | fromYamlArray }}
      - name: host-{{ $i }}
        mountPath: /host{{ $path }}
      {{- end }}
      - name: os-release
        mountPath: /host/etc/os-release
        readOnly: true
      {{- end }}
volumes:
  - name: ready
    emptyDir:
      medium: Memory
      sizeLimit: 1Mi
  {{- if $auto }}
  - name: host
    hostPath:
      path: /
      type: Directory
  {{- else }}
  {{- range $i, $path := include "wasmpod.hostPaths" $root | fromYamlArray }}
  - name: host-{{ $i }}
    hostPath:
      path: {{ $path }}
      type: DirectoryOrCreate
  {{- end }}
  - name: os-release
    hostPath:
      path: /etc/os-release
      type: File
  {{- end }}
{{- end -}}
