#!/usr/bin/env python3
"""Paying x402 client built on the OFFICIAL x402 Python SDK, for paygate's Rust tests.

Everything protocol-shaped (parsing the 402 offer, choosing a requirement, signing the
EIP-3009 authorization, choosing and encoding the header, decoding the settlement) is
done by the SDK, so a mismatch between paygate and the protocol shows up as an SDK error
rather than as agreement with our own idea of the format.

Needs: pip install 'x402[evm]==2.25.0'   (eth-account for the local signer)

Usage:
  x402_sdk_client.py pay --version {1|2} --offer-header HDR --offer-body BODY --private-key 0xKEY
      -> stdout: "<header-name> <header-value>"  (X-PAYMENT for v1, PAYMENT-SIGNATURE for v2)
  x402_sdk_client.py settled --version {1|2} --header VALUE
      -> stdout: the SDK's SettleResponse as one line of JSON

Exit codes: 0 ok; 3 the SDK refused the server's offer / settlement header (a protocol
finding); 4 the SDK parsed the offer but would not pay it (no matching scheme/network,
spend controls, signing error); 2 bad command line (argparse).
"""

import argparse
import json
import sys

from eth_account import Account
from x402 import x402ClientSync
from x402.http import (
    PAYMENT_REQUIRED_HEADER,
    PAYMENT_RESPONSE_HEADER,
    X_PAYMENT_RESPONSE_HEADER,
    x402HTTPClientSync,
)
from x402.mechanisms.evm.exact import register_exact_evm_client


def fail(code: int, what: str, err: BaseException) -> None:
    print(f"{what}: {type(err).__name__}: {err}", file=sys.stderr)
    sys.exit(code)


def make_http_client(private_key: str | None) -> x402HTTPClientSync:
    client = x402ClientSync()
    if private_key:
        # Registers exact/EVM for v2 (eip155:*) and for every v1 legacy network name
        # (base-sepolia, ...); the LocalAccount is wrapped in the SDK's EthAccountSigner.
        # Default spend controls stay on (known assets only, <= $1), as for a real buyer.
        register_exact_evm_client(client, Account.from_key(private_key))
    return x402HTTPClientSync(client)


def pay(args: argparse.Namespace) -> None:
    http = make_http_client(args.private_key)

    # Same entry point the SDK's requests/httpx wrappers use on a 402: the
    # PAYMENT-REQUIRED header wins (v2); otherwise a JSON body with x402Version == 1.
    headers = {PAYMENT_REQUIRED_HEADER: args.offer_header} if args.offer_header else {}
    try:
        body = json.loads(args.offer_body) if args.offer_body else None
        offer = http.get_payment_required_response(headers.get, body)
    except Exception as e:  # pydantic ValidationError, bad base64/JSON, "Invalid ... response"
        fail(3, "SDK rejected the 402 offer", e)
    if offer.x402_version != args.version:
        fail(3, "SDK rejected the 402 offer",
             ValueError(f"parsed as x402Version {offer.x402_version}, expected {args.version}"))

    try:
        payload = http.create_payment_payload(offer)
    except Exception as e:
        fail(4, "SDK would not create a payment for the offer", e)

    # The SDK picks the header name from the payload's version.
    ((name, value),) = http.encode_payment_signature_header(payload).items()
    print(f"{name} {value}")


def settled(args: argparse.Namespace) -> None:
    http = make_http_client(None)
    # Present the value under the header name the given version uses, and let the SDK
    # find and decode it.
    name = X_PAYMENT_RESPONSE_HEADER if args.version == 1 else PAYMENT_RESPONSE_HEADER
    try:
        resp = http.get_payment_settle_response({name: args.header}.get)
    except Exception as e:
        fail(3, "SDK rejected the settlement header", e)
    print(resp.model_dump_json(by_alias=True, exclude_none=True))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    p_pay = sub.add_parser("pay")
    p_pay.add_argument("--version", type=int, choices=[1, 2], required=True)
    p_pay.add_argument("--offer-header", default="")
    p_pay.add_argument("--offer-body", default="")
    p_pay.add_argument("--private-key", required=True)
    p_set = sub.add_parser("settled")
    p_set.add_argument("--version", type=int, choices=[1, 2], required=True)
    p_set.add_argument("--header", required=True)
    args = p.parse_args()
    pay(args) if args.cmd == "pay" else settled(args)


if __name__ == "__main__":
    main()
