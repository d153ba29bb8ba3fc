{{/*
Shared pieces of Meshop's chart. Names follow DESIGN.md: every workload
is named after its service (auth ... notification, edge, controlplane),
so one release per namespace.
*/}}

{{/* meshop.services: the six apps, in DESIGN §2's order. */}}
{{- define "meshop.services" -}}
auth user product order payment notification
{{- end -}}

{{/* meshop.labels: the labels of every object of workload .name. */}}
{{- define "meshop.labels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/part-of: meshop
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{/* meshop.selector: the pod selector of workload .name. */}}
{{- define "meshop.selector" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{/* meshop.image: Meshop's image of .name. */}}
{{- define "meshop.image" -}}
{{ printf "%s/%s:%s" .root.Values.images.repository .name .root.Values.images.tag }}
{{- end -}}

{{/* meshop.secretName: the Secret holding the database URLs, NATS passwords and auth's key. */}}
{{- define "meshop.secretName" -}}
{{ .Values.secrets.existingSecret | default "meshop-secrets" }}
{{- end -}}

{{/* meshop.downwardEnv: the pod's name and IP and its node's IP. */}}
{{- define "meshop.downwardEnv" -}}
- name: POD_NAME
  valueFrom: {fieldRef: {fieldPath: metadata.name}}
- name: POD_IP
  valueFrom: {fieldRef: {fieldPath: status.podIP}}
- name: HOST_IP
  valueFrom: {fieldRef: {fieldPath: status.hostIP}}
{{- end -}}

{{/* meshop.consulEnv: how a container reaches its node's Consul client agent. */}}
{{- define "meshop.consulEnv" -}}
- name: CONSUL_HTTP_ADDR
  value: https://$(HOST_IP):{{ .Values.consul.httpsPort }}
- name: CONSUL_CACERT
  value: /consul/agent-ca/ca.pem
- name: CONSUL_HTTP_TOKEN_FILE
  value: /consul/acl/token
{{- end -}}

{{/* meshop.podSecurity: every Meshop pod's security context. */}}
{{- define "meshop.podSecurity" -}}
runAsNonRoot: true
fsGroup: 65532
seccompProfile: {type: RuntimeDefault}
{{- end -}}

{{/* meshop.containerSecurity: a non-root container with a read-only root file system; .uid is its user. */}}
{{- define "meshop.containerSecurity" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: 65532
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
capabilities: {drop: [ALL]}
{{- end -}}

{{/*
meshop.consulLogin: the init container that logs the pod's ServiceAccount
in to Consul (the auth method consul-init made) and keeps the token and
Consul's Connect CA roots on in-memory volumes; with .proxyless it also
writes the app's gRPC xDS bootstrap. Arguments: root, service.
*/}}
{{- define "meshop.consulLogin" -}}
- name: consul-login
  image: {{ .root.Values.images.consul }}
  imagePullPolicy: {{ .root.Values.images.pullPolicy }}
  command: ["sh", "/etc/meshop/scripts/consul-login.sh"]
  env:
    {{- include "meshop.downwardEnv" . | nindent 4 }}
    {{- include "meshop.consulEnv" .root | nindent 4 }}
    - name: SERVICE
      value: {{ .service }}
    - name: CONSUL_AUTH_METHOD
      value: {{ .root.Values.consul.authMethod }}
    {{- if .proxyless }}
    - name: GRPC_XDS_BOOTSTRAP
      value: /etc/meshop/xds/bootstrap.json
    {{- end }}
  securityContext:
    {{- include "meshop.containerSecurity" (dict "uid" 100) | nindent 4 }}
  resources:
    {{- toYaml .root.Values.init.resources | nindent 4 }}
  volumeMounts:
    - {name: scripts, mountPath: /etc/meshop/scripts, readOnly: true}
    - {name: serviceaccount-token, mountPath: /var/run/secrets/meshop/serviceaccount, readOnly: true}
    - {name: consul-agent-ca, mountPath: /consul/agent-ca, readOnly: true}
    - {name: consul-acl, mountPath: /consul/acl}
    - {name: consul-ca, mountPath: /consul/ca}
    {{- if .proxyless }}
    - {name: xds-bootstrap, mountPath: /etc/meshop/xds}
    {{- end }}
{{- end -}}

{{/*
meshop.consulVolumes: the volumes of meshop.consulLogin: its scripts, the
ServiceAccount token it logs in with (projected, for Consul's audience
default), the Consul agents' CA, and in memory the token and the roots.
*/}}
{{- define "meshop.consulVolumes" -}}
- name: scripts
  configMap: {name: meshop-scripts}
- name: serviceaccount-token
  projected:
    sources:
      - serviceAccountToken: {path: token, expirationSeconds: 3600}
- name: consul-agent-ca
  secret:
    secretName: {{ .Values.consul.caSecret.name }}
    items: [{key: {{ .Values.consul.caSecret.key }}, path: ca.pem}]
- name: consul-acl
  emptyDir: {medium: Memory, sizeLimit: 1Mi}
- name: consul-ca
  emptyDir: {medium: Memory, sizeLimit: 1Mi}
- name: tmp
  emptyDir: {medium: Memory, sizeLimit: 16Mi}
{{- end -}}

{{/*
meshop.envoyContainer: an Envoy (a sidecar, or the edge) started as in
compose: envoy/entrypoint.sh renders the bootstrap envoy/<role>-<xds>.yaml
with the pod's Consul token into /tmp (memory) and starts Envoy with the
node id of the pod's name, the cluster .service, and Istio's drain flags.
The image's own entrypoint runs Envoy as the user it already is
(ENVOY_UID 0 means: do not switch users). Arguments: root, role, service.
*/}}
{{- define "meshop.envoyContainer" -}}
image: {{ .root.Values.images.envoy }}
imagePullPolicy: {{ .root.Values.images.pullPolicy }}
command: ["sh", "/etc/meshop/envoy/entrypoint.sh"]
args:
  - -c
  - {{ printf "/etc/meshop/envoy/%s-%s.yaml" .role .root.Values.mesh.xds }}
  - --service-node
  - $(POD_NAME)
  - --service-cluster
  - {{ .service }}
  - --drain-strategy
  - immediate
  - --drain-time-s
  - "45"
env:
  - name: POD_NAME
    valueFrom: {fieldRef: {fieldPath: metadata.name}}
  - name: CONSUL_HTTP_TOKEN_FILE
    value: /consul/acl/token
  - name: TMPDIR
    value: /tmp
  - name: ENVOY_UID
    value: "0"
securityContext:
  {{- include "meshop.containerSecurity" (dict "uid" 101) | nindent 2 }}
{{- end -}}

{{/* meshop.envoyMounts: what every Envoy reads: its files, its token, the Connect CA roots, /tmp. */}}
{{- define "meshop.envoyMounts" -}}
- {name: envoy, mountPath: /etc/meshop/envoy, readOnly: true}
- {name: consul-acl, mountPath: /consul/acl, readOnly: true}
- {name: consul-ca, mountPath: /consul/ca, readOnly: true}
- {name: envoy-tmp, mountPath: /tmp}
{{- end -}}

{{/* meshop.envoyVolumes: the volumes of meshop.envoyMounts beyond meshop.consulVolumes; /tmp holds the rendered bootstrap, token included: memory. */}}
{{- define "meshop.envoyVolumes" -}}
- name: envoy
  configMap: {name: meshop-envoy}
- name: envoy-tmp
  emptyDir: {medium: Memory, sizeLimit: 16Mi}
{{- end -}}
