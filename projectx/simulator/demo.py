"""The demo seed that `python -m projectx.simulator`, `make run` and the test fixture use."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from projectx.simulator.server import GatewaySimulator

DEMO_USERNAME = "demo"
DEMO_API_KEY = "demo-api-key"
DEMO_ACCOUNT_ID = 1001
DEMO_ACCOUNT_NAME = "PRAC-V2-1001"
DEMO_SECOND_ACCOUNT_ID = 1002
DEMO_SECOND_ACCOUNT_NAME = "PRAC-V2-1002"
DEMO_BALANCE = Decimal("50000.00")


class DemoContract(NamedTuple):
    id: str
    name: str
    description: str
    tick_size: Decimal
    tick_value: Decimal
    price: Decimal


# CME micro futures, December 2026 (tick sizes and values are the exchange's).
DEMO_CONTRACTS: tuple[DemoContract, ...] = (
    DemoContract(
        "CON.F.US.MNQ.Z26",
        "MNQZ6",
        "Micro E-mini Nasdaq-100: December 2026",
        Decimal("0.25"),
        Decimal("0.50"),
        Decimal("21000.00"),
    ),
    DemoContract(
        "CON.F.US.MES.Z26",
        "MESZ6",
        "Micro E-mini S&P 500: December 2026",
        Decimal("0.25"),
        Decimal("1.25"),
        Decimal("6000.00"),
    ),
    DemoContract(
        "CON.F.US.MYM.Z26",
        "MYMZ6",
        "Micro E-mini Dow Jones: December 2026",
        Decimal("1"),
        Decimal("0.50"),
        Decimal("44000"),
    ),
    DemoContract(
        "CON.F.US.M2K.Z26",
        "M2KZ6",
        "Micro E-mini Russell 2000: December 2026",
        Decimal("0.10"),
        Decimal("0.50"),
        Decimal("2300.00"),
    ),
    DemoContract(
        "CON.F.US.MGC.Z26",
        "MGCZ6",
        "Micro Gold: December 2026",
        Decimal("0.10"),
        Decimal("1.00"),
        Decimal("2650.00"),
    ),
)
DEMO_CONTRACT_ID = DEMO_CONTRACTS[0].id


def seed_demo_data(simulator: GatewaySimulator) -> None:
    """User demo / demo-api-key; practice accounts 1001 and 1002; the micro contracts above,
    each with a price."""
    simulator.add_user(DEMO_USERNAME, DEMO_API_KEY)
    simulator.add_account(DEMO_ACCOUNT_ID, DEMO_ACCOUNT_NAME, DEMO_BALANCE, simulated=True)
    simulator.add_account(
        DEMO_SECOND_ACCOUNT_ID, DEMO_SECOND_ACCOUNT_NAME, DEMO_BALANCE, simulated=True
    )
    for contract in DEMO_CONTRACTS:
        simulator.add_contract(
            contract.id,
            contract.name,
            contract.tick_size,
            contract.tick_value,
            description=contract.description,
        )
        simulator.set_price(contract.id, contract.price)
