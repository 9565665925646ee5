# The JSON-Schema documents of /v2/schemas/{image,images,member,members,task,tasks}, as Glance
# 33 serves them without operator-defined extra properties (python-glanceclient downloads
# `image` and validates requests against it, so it must match what the engine accepts).
# Invariants: the documents are built fresh per call from literals (callers may not share
# mutable state); key order and content are byte-for-byte Glance's with json.dumps defaults
# (checked by tests against the Content-Length Glance sends); `images` embeds `image` and
# `members` embeds `member` the way Glance's CollectionSchema raw()/minimal() do; `tasks` embeds
# `task` without input, result and message (Glance's tasks.get_collection_schema drops them).
from __future__ import annotations

import copy
from typing import Any

from tessera.http.message import Request, Response
from tessera.http.render import json_response

DISK_FORMATS = ("ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso", "ploop")
CONTAINER_FORMATS = ("ami", "ari", "aki", "bare", "ovf", "ova", "docker", "compressed")

_IMAGE_PROPERTIES: dict[str, Any] = {'id': {'type': 'string',
        'description': 'An identifier for the image',
        'pattern': '^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$'},
 'name': {'type': ['null', 'string'],
          'description': 'Descriptive name for the image',
          'maxLength': 255},
 'status': {'type': 'string',
            'readOnly': True,
            'description': 'Status of the image',
            'enum': ['queued',
                     'saving',
                     'active',
                     'killed',
                     'deleted',
                     'uploading',
                     'importing',
                     'pending_delete',
                     'deactivated']},
 'visibility': {'type': 'string',
                'description': 'Scope of image accessibility',
                'enum': ['community', 'public', 'private', 'shared']},
 'protected': {'type': 'boolean', 'description': 'If true, image will not be deletable.'},
 'os_hidden': {'type': 'boolean',
               'description': 'If true, image will not appear in default image list response.'},
 'checksum': {'type': ['null', 'string'],
              'readOnly': True,
              'description': 'md5 hash of image contents.',
              'maxLength': 32},
 'os_hash_algo': {'type': ['null', 'string'],
                  'readOnly': True,
                  'description': 'Algorithm to calculate the os_hash_value',
                  'maxLength': 64},
 'os_hash_value': {'type': ['null', 'string'],
                   'readOnly': True,
                   'description': 'Hexdigest of the image contents using the algorithm '
                                  'specified by the os_hash_algo',
                   'maxLength': 128},
 'owner': {'type': ['null', 'string'], 'description': 'Owner of the image', 'maxLength': 255},
 'size': {'type': ['null', 'integer'],
          'readOnly': True,
          'description': 'Size of image file in bytes'},
 'virtual_size': {'type': ['null', 'integer'],
                  'readOnly': True,
                  'description': 'Virtual size of image in bytes'},
 'container_format': {'type': ['null', 'string'],
                      'description': 'Format of the container',
                      'enum': [None,
                               'ami',
                               'ari',
                               'aki',
                               'bare',
                               'ovf',
                               'ova',
                               'docker',
                               'compressed']},
 'disk_format': {'type': ['null', 'string'],
                 'description': 'Format of the disk',
                 'enum': [None,
                          'ami',
                          'ari',
                          'aki',
                          'vhd',
                          'vhdx',
                          'vmdk',
                          'raw',
                          'qcow2',
                          'vdi',
                          'iso',
                          'ploop']},
 'created_at': {'type': 'string',
                'readOnly': True,
                'description': 'Date and time of image registration'},
 'updated_at': {'type': 'string',
                'readOnly': True,
                'description': 'Date and time of the last image modification'},
 'tags': {'type': 'array',
          'description': 'List of strings related to the image',
          'items': {'type': 'string', 'maxLength': 255}},
 'direct_url': {'type': 'string',
                'readOnly': True,
                'description': 'URL to access the image file kept in external store'},
 'min_ram': {'type': 'integer', 'description': 'Amount of ram (in MB) required to boot image.'},
 'min_disk': {'type': 'integer',
              'description': 'Amount of disk space (in GB) required to boot image.'},
 'self': {'type': 'string', 'readOnly': True, 'description': 'An image self url'},
 'file': {'type': 'string', 'readOnly': True, 'description': 'An image file url'},
 'stores': {'type': 'string',
            'readOnly': True,
            'description': 'Store in which image data resides.  Only present when the operator '
                           'has enabled multiple stores.  May be a comma-separated list of '
                           'store identifiers.'},
 'schema': {'type': 'string', 'readOnly': True, 'description': 'An image schema url'},
 'locations': {'type': 'array',
               'items': {'type': 'object',
                         'properties': {'url': {'type': 'string', 'maxLength': 255},
                                        'metadata': {'type': 'object'},
                                        'validation_data': {'description': 'Values to be used '
                                                                           'to populate the '
                                                                           'corresponding '
                                                                           'image properties. '
                                                                           'If the image '
                                                                           'status is not '
                                                                           "'queued', values "
                                                                           'must exactly match '
                                                                           'those already '
                                                                           'contained in the '
                                                                           'image properties.',
                                                            'type': 'object',
                                                            'writeOnly': True,
                                                            'additionalProperties': False,
                                                            'properties': {'checksum': {'type': 'string',
                                                                                        'minLength': 32,
                                                                                        'maxLength': 32},
                                                                           'os_hash_algo': {'type': 'string',
                                                                                            'maxLength': 64},
                                                                           'os_hash_value': {'type': 'string',
                                                                                             'maxLength': 128}},
                                                            'required': ['os_hash_algo',
                                                                         'os_hash_value']}},
                         'required': ['url', 'metadata']},
               'description': 'A set of URLs to access the image file kept in external store'}}

_MEMBER_PROPERTIES: dict[str, Any] = {'member_id': {'type': 'string',
               'description': 'An identifier for the image member (tenantId)'},
 'image_id': {'type': 'string',
              'description': 'An identifier for the image',
              'pattern': '^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$'},
 'created_at': {'type': 'string', 'description': 'Date and time of image member creation'},
 'updated_at': {'type': 'string',
                'description': 'Date and time of last modification of image member'},
 'status': {'type': 'string',
            'description': 'The status of this image member',
            'enum': ['pending', 'accepted', 'rejected']},
 'schema': {'readOnly': True, 'type': 'string'}}


_TASK_PROPERTIES: dict[str, Any] = {'id': {'description': 'An identifier for the task',
        'pattern': '^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$',
        'type': 'string'},
 'type': {'description': 'The type of task represented by this content',
          'enum': ['import', 'api_image_import', 'location_import'],
          'type': 'string'},
 'status': {'description': 'The current status of this task',
            'enum': ['pending', 'processing', 'success', 'failure'],
            'type': 'string'},
 'input': {'description': 'The parameters required by task, JSON blob', 'type': ['null', 'object']},
 'result': {'description': 'The result of current task, JSON blob', 'type': ['null', 'object']},
 'owner': {'description': 'An identifier for the owner of this task', 'type': 'string'},
 'message': {'description': 'Human-readable informative message only included when appropriate '
                            '(usually on failure)',
             'type': 'string'},
 'image_id': {'description': 'Image associated with the task', 'type': 'string'},
 'request_id': {'description': 'Human-readable informative request-id', 'type': 'string'},
 'user_id': {'description': 'User associated with the task', 'type': 'string'},
 'expires_at': {'description': 'Datetime when this resource would be subject to removal',
                'type': ['null', 'string']},
 'created_at': {'description': 'Datetime when this resource was created', 'type': 'string'},
 'updated_at': {'description': 'Datetime when this resource was updated', 'type': 'string'},
 'self': {'readOnly': True, 'type': 'string'},
 'schema': {'readOnly': True, 'type': 'string'}}


def image_schema() -> dict[str, Any]:
    """Glance's PermissiveSchema('image').raw()."""
    return {
        "name": "image",
        "properties": copy.deepcopy(_IMAGE_PROPERTIES),
        "additionalProperties": {"type": "string"},
        "links": [
            {"rel": "self", "href": "{self}"},
            {"rel": "enclosure", "href": "{file}"},
            {"rel": "describedby", "href": "{schema}"},
        ],
    }


def images_schema() -> dict[str, Any]:
    """CollectionSchema('images', image).raw()."""
    return {
        "name": "images",
        "properties": {
            "images": {"type": "array", "items": image_schema()},
            "first": {"type": "string"},
            "next": {"type": "string"},
            "schema": {"type": "string"},
        },
        "links": [
            {"rel": "first", "href": "{first}"},
            {"rel": "next", "href": "{next}"},
            {"rel": "describedby", "href": "{schema}"},
        ],
    }


def member_schema() -> dict[str, Any]:
    """Schema('member').minimal()."""
    return {"name": "member", "properties": copy.deepcopy(_MEMBER_PROPERTIES)}


def members_schema() -> dict[str, Any]:
    """CollectionSchema('members', member).minimal()."""
    return {
        "name": "members",
        "properties": {
            "members": {"type": "array", "items": member_schema()},
            "schema": {"type": "string"},
        },
        "links": [{"rel": "describedby", "href": "{schema}"}],
    }


def task_schema() -> dict[str, Any]:
    """tasks.get_task_schema(): Schema('task') (no links)."""
    return {"name": "task", "properties": copy.deepcopy(_TASK_PROPERTIES)}


def tasks_schema() -> dict[str, Any]:
    """tasks.get_collection_schema(): the task schema without input, result and message."""
    item = task_schema()
    for name in ("input", "result", "message"):
        del item["properties"][name]
    return {
        "name": "tasks",
        "properties": {
            "tasks": {"type": "array", "items": item},
            "schema": {"type": "string"},
        },
        "links": [{"rel": "describedby", "href": "{schema}"}],
    }


async def get_image_schema(request: Request) -> Response:
    return json_response(image_schema())


async def get_images_schema(request: Request) -> Response:
    return json_response(images_schema())


async def get_member_schema(request: Request) -> Response:
    return json_response(member_schema())


async def get_members_schema(request: Request) -> Response:
    return json_response(members_schema())


async def get_task_schema(request: Request) -> Response:
    return json_response(task_schema())


async def get_tasks_schema(request: Request) -> Response:
    return json_response(tasks_schema())
