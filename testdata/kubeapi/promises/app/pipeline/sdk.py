"""The HTTP calls of the Kratix SDKs' PublishStatus (kratix-go sdk.go, kratix-python
kratix_sdk.py): the kubeconfig from $HOME/.kube/config (kratix-go ignores KUBECONFIG), then a
JSON merge patch {"status": ...} on the request's status subresource. argv[1] is the Pipeline:
"first" publishes, waits for the test on /shared/go (a FIFO) and writes status.yaml; "second"
tries the first Pipeline's token (which must be refused) and its own."""
import base64
import json
import os
import ssl
import sys
import urllib.error
import urllib.request

import yaml


def kubeconfig():
    with open(os.path.join(os.environ["HOME"], ".kube", "config")) as f:
        cfg = yaml.safe_load(f)
    ctx = next(c["context"] for c in cfg["contexts"] if c["name"] == cfg["current-context"])
    cluster = next(c["cluster"] for c in cfg["clusters"] if c["name"] == ctx["cluster"])
    user = next(u["user"] for u in cfg["users"] if u["name"] == ctx["user"])
    ca = base64.b64decode(cluster["certificate-authority-data"]).decode()
    return cluster["server"], user["token"], ssl.create_default_context(cadata=ca)


def publish_status(server, token, name, status):
    """Returns the HTTP status code of the patch."""
    e = os.environ
    url = "{}/apis/{}/{}/namespaces/{}/{}/{}/status".format(
        server, e["KRATIX_OBJECT_GROUP"], e["KRATIX_OBJECT_VERSION"],
        e["KRATIX_OBJECT_NAMESPACE"], e["KRATIX_CRD_PLURAL"], name)
    req = urllib.request.Request(
        url, data=json.dumps({"status": status}).encode(), method="PATCH",
        headers={"Content-Type": "application/merge-patch+json",
                 "Accept": "application/json",
                 "Authorization": "Bearer " + token})
    try:
        with urllib.request.urlopen(req, context=TLS) as r:
            return r.status
    except urllib.error.HTTPError as err:
        return err.code


server, token, TLS = kubeconfig()
name = os.environ["KRATIX_OBJECT_NAME"]
if sys.argv[1] == "first":
    own = publish_status(server, token, name, {"publishedDirectly": True, "stage": "started"})
    other = publish_status(server, token, "other", {"stage": "hijacked"})
    with open("/shared/token", "w") as f:
        f.write(token)
    with open("/shared/go") as f:
        f.read()
    with open("/kratix/metadata/status.yaml", "w") as f:
        f.write("stage: finished\nviaFile: true\nownPatch: %d\notherPatch: %d\n" % (own, other))
else:
    with open("/shared/token") as f:
        stale = publish_status(server, f.read(), name, {"stale": True})
    second = publish_status(server, token, name, {"second": True})
    with open("/kratix/metadata/status.yaml", "w") as f:
        f.write("staleToken: %d\nsecondPatch: %d\n" % (stale, second))
