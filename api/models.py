"""Every table, imported in one place so metadata and Alembic see them all."""

from api.advisors.models import AdvisorAssignment  # noqa: F401
from api.agents.models import Agent, AgentRole
from api.appointments.models import Appointment, WorkSchedule  # noqa: F401
from api.audit.models import AuditEvent
from api.channels.wechat_oa.models import OaPendingMessage  # noqa: F401
from api.conversations.models import (
    Conversation,
    ConversationState,
    Direction,
    Escalation,
    Message,
    SenderKind,
)
from api.customers.models import Channel, ChannelIdentity, Customer
from api.delivery.models import MessageDelivery, SubscribeGrant  # noqa: F401
from api.documents.models import Document, DocumentRequest  # noqa: F401
from api.guides.models import Guide  # noqa: F401
from api.studio.models import InboxItem, ModelVersion, StudioJob  # noqa: F401
from api.video.models import CallConsent, CallEvent, IdentityCheck, Recording, RepaymentPlan, VideoCall  # noqa: F401

__all__ = [
    "Agent",
    "AgentRole",
    "AuditEvent",
    "Channel",
    "ChannelIdentity",
    "Conversation",
    "ConversationState",
    "Customer",
    "Direction",
    "Escalation",
    "Message",
    "SenderKind",
]
