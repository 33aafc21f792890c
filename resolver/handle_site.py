"""This node's site description (HS_SITE), answered to GET_SITE_INFO."""

from __future__ import annotations

import ipaddress

from protocol.site_info import (
    Attribute,
    Interface,
    InterfaceType,
    Protocol,
    ServerInfo,
    SiteInfo,
)

SITE_SERIAL = 1


def node_site(host: str, handle_port: int, http_port: int, *, tls: bool = False) -> SiteInfo:
    """One primary server: binary admin+query over TCP, query over UDP, and the HTTP API."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = ipaddress.ip_address("127.0.0.1")  # a name: clients are told loopback
    if address.is_unspecified:  # bound to every address: advertise loopback
        address = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
    return SiteInfo(
        serial_number=SITE_SERIAL,
        primary=True,
        attributes=(Attribute("desc", "idnode"),),
        servers=(
            ServerInfo(
                server_id=1,
                address=address,  # type: ignore[arg-type]  # converted by ServerInfo
                interfaces=(
                    Interface(InterfaceType.BOTH, Protocol.TCP, handle_port),
                    Interface(InterfaceType.QUERY, Protocol.UDP, handle_port),
                    Interface(InterfaceType.BOTH, Protocol.HTTPS if tls else Protocol.HTTP,
                              http_port),
                ),
            ),
        ),
    )
