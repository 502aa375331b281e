"""A small client for keyplane's batch extension, which AWS SDKs cannot call.

    from keyplane.client import BatchClient
    with BatchClient("http://127.0.0.1:4599") as client:
        keys = client.generate_data_keys("alias/app", 1000, key_spec="AES_256")

Each call sends one request and returns one result per item, in order: a dict of the
members the single-item KMS operation returns, or a ``BatchItemError``. It keeps one
HTTP/1.1 connection alive, and signs every request with SigV4 using the credentials
given, or else those the AWS SDKs would find (environment, shared credentials file,
profile).
"""

from __future__ import annotations

import base64
import http.client
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import botocore.session
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials


@dataclass(frozen=True)
class BatchItemError:
    """One item's failure: the AWS error code and message it would have had alone."""

    code: str
    message: str


class BatchRequestError(Exception):
    """The whole request failed (malformed, or a server fault)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


class BatchClient:
    def __init__(
        self,
        endpoint: str,
        *,
        region: str = "us-east-1",
        credentials: Credentials | None = None,
        timeout: float = 60.0,
    ) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"an http:// endpoint, not {endpoint!r}")
        if credentials is None:
            credentials = botocore.session.Session().get_credentials()
        if credentials is None:
            raise ValueError("no AWS credentials given or found")
        self._url = f"http://{parts.netloc}/"
        self._signer = SigV4Auth(credentials, "kms", region)
        self._connection = http.client.HTTPConnection(
            parts.hostname, parts.port or 80, timeout=timeout
        )

    def __enter__(self) -> BatchClient:
        return self

    def __exit__(
        self, *exc: tuple[type[BaseException], BaseException, TracebackType]
    ) -> None:
        self.close()

    def close(self) -> None:
        self._connection.close()

    def generate_data_keys(
        self,
        key_id: str,
        count: int,
        *,
        key_spec: str = "AES_256",
        encryption_context: Mapping[str, str] | None = None,
    ) -> list[dict[str, Any] | BatchItemError]:
        """``count`` data keys under ``key_id`` (Plaintext, CiphertextBlob: bytes)."""
        item: dict[str, Any] = {"KeyId": key_id, "KeySpec": key_spec}
        if encryption_context:
            item["EncryptionContext"] = dict(encryption_context)
        return self._call("GenerateDataKey", [item] * count)

    def encrypt(
        self,
        key_id: str,
        plaintexts: Sequence[bytes],
        encryption_context: Mapping[str, str] | None = None,
    ) -> list[dict[str, Any] | BatchItemError]:
        items = [
            {
                "KeyId": key_id,
                "Plaintext": base64.b64encode(p).decode(),
                **(
                    {"EncryptionContext": dict(encryption_context)}
                    if encryption_context
                    else {}
                ),
            }
            for p in plaintexts
        ]
        return self._call("Encrypt", items)

    def decrypt(
        self,
        blobs: Sequence[bytes],
        encryption_context: Mapping[str, str] | None = None,
    ) -> list[dict[str, Any] | BatchItemError]:
        items = [
            {
                "CiphertextBlob": base64.b64encode(b).decode(),
                **(
                    {"EncryptionContext": dict(encryption_context)}
                    if encryption_context
                    else {}
                ),
            }
            for b in blobs
        ]
        return self._call("Decrypt", items)

    def explain_access(
        self,
        action: str,
        *,
        key_id: str | None = None,
        principal: str | None = None,
        encryption_context: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Whether ``principal`` (default: the signer) may do ``action`` on the key,
        and which statement or grant decides it (keyplane's ExplainAccess)."""
        payload: dict[str, Any] = {"Action": action}
        if key_id is not None:
            payload["KeyId"] = key_id
        if principal is not None:
            payload["Principal"] = principal
        if encryption_context is not None:
            payload["EncryptionContext"] = dict(encryption_context)
        return self._post("ExplainAccess", payload)

    def advance_clock(self, seconds: float) -> float:
        """Move the server's clock ``seconds`` forward (a server started with
        ``[clock] adjustable = true``); returns its new now, in epoch seconds."""
        return float(self._post("AdvanceClock", {"Seconds": seconds})["Now"])

    # --- emulated CloudHSM clusters (keyplane.api.clusters) ---

    def create_cloudhsm_cluster(self, **members: Any) -> dict[str, Any]:
        """Create a cluster for custom key stores: ``TrustAnchorCertificate`` and
        optionally ``ClusterId``, ``HsmCount``, ``KmsUserPassword``,
        ``ExtraLatencyMs``, ``CapacityPerSecond``, ``SourceClusterId``."""
        return dict(self._post("CreateCloudHsmCluster", members)["Cluster"])

    def describe_cloudhsm_clusters(
        self, cluster_id: str | None = None
    ) -> list[dict[str, Any]]:
        payload = {} if cluster_id is None else {"ClusterId": cluster_id}
        return list(self._post("DescribeCloudHsmClusters", payload)["Clusters"])

    def update_cloudhsm_cluster(
        self, cluster_id: str, **changes: Any
    ) -> dict[str, Any]:
        """Change a cluster as its owner would: ``HsmCount``, ``Active``,
        ``KmsUserPassword``, ``DeleteKmsUser``, ``KmsUserLockedOut``,
        ``KmsUserLoggedIn``, ``ExtraLatencyMs``, ``CapacityPerSecond``, ..."""
        payload = {"ClusterId": cluster_id, **changes}
        return dict(self._post("UpdateCloudHsmCluster", payload)["Cluster"])

    def _post(self, operation: str, payload: dict[str, Any]) -> dict[str, Any]:
        body = json.dumps(payload).encode()
        request = AWSRequest(
            method="POST",
            url=self._url,
            data=body,
            headers={
                "X-Amz-Target": f"KeyplaneService.{operation}",
                "Content-Type": "application/x-amz-json-1.1",
            },
        )
        self._signer.add_auth(request)
        self._connection.request("POST", "/", body=body, headers=dict(request.headers))
        response = self._connection.getresponse()
        answer: dict[str, Any] = json.loads(response.read() or b"{}")
        if response.status != 200:
            raise BatchRequestError(
                response.status, answer.get("__type", ""), answer.get("message", "")
            )
        return answer

    def _call(
        self, operation: str, items: list[dict[str, Any]]
    ) -> list[dict[str, Any] | BatchItemError]:
        payload = self._post(operation, {"Items": items})
        results: list[dict[str, Any] | BatchItemError] = []
        for result in payload["Results"]:
            if "Error" in result:
                results.append(
                    BatchItemError(result["Error"]["Code"], result["Error"]["Message"])
                )
                continue
            for member in ("Plaintext", "CiphertextBlob"):
                if member in result:
                    result[member] = base64.b64decode(result[member])
            results.append(result)
        return results
