# Pinned tool versions, read by hack/install-tools.sh and hack/tools.ts. Bump KUBE_VERSION together with
# hack/k8s/go.mod (the require line and every replace directive).
KUBE_VERSION=v1.36.3
HELM_VERSION=v3.22.0
