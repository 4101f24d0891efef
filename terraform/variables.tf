variable "fleet_name" {
  description = "LabLink fleet name; tagged lablink:fleet on every resource."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,38}[a-z0-9]$", var.fleet_name))
    error_message = "fleet_name must be lowercase letters, digits and dashes."
  }
}

variable "vm_ids" {
  description = "The fleet's VMs: VM name => LabLink VM id (a UUID). One instance per entry."
  type        = map(string)
}

variable "agent_tokens" {
  description = "VM name => the agent token the VM's agent authenticates with. Only VMs about to be created need a real token; existing instances ignore user data changes."
  type        = map(string)
  sensitive   = true
}

variable "region" {
  description = "AWS region of the fleet, e.g. us-west-2."
  type        = string
}

variable "instance_type" {
  description = "EC2 instance type, e.g. g5.xlarge."
  type        = string
}

variable "ami_id" {
  description = "AMI for the VMs. Null: the newest AWS Deep Learning Base GPU AMI (Ubuntu 22.04)."
  type        = string
  default     = null
}

variable "subnet_id" {
  description = "Subnet for the instances. Null: the default subnet of the region's default VPC."
  type        = string
  default     = null
}

variable "vpc_id" {
  description = "VPC of the security group. Null: the region's default VPC. Must contain subnet_id."
  type        = string
  default     = null
}

variable "root_volume_gb" {
  description = "Size of the encrypted gp3 root volume in GiB."
  type        = number
  default     = 100

  validation {
    condition     = var.root_volume_gb >= 20 && var.root_volume_gb <= 4096
    error_message = "root_volume_gb must be between 20 and 4096."
  }
}

variable "key_name" {
  description = "EC2 key pair for SSH. Null: no key pair."
  type        = string
  default     = null
}

variable "allowed_ssh_cidrs" {
  description = "IPv4 CIDR blocks allowed to reach port 22. Empty (the default) opens SSH to nobody."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.allowed_ssh_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "allowed_ssh_cidrs must be IPv4 CIDR blocks, and not 0.0.0.0/0."
  }
}

variable "container_image" {
  description = "The research container each VM runs, e.g. ghcr.io/talmolab/lablink-client-base-image:1.0."
  type        = string
}

variable "agent_image" {
  description = "Container image of the LabLink agent, built and pushed from this repository by scripts/build-images.sh (<registry>/lablink-agent:<version>); the worker passes LABLINK_AGENT_IMAGE. No default. Empty only for client_image_compat fleets, which run no agent."
  type        = string
}

variable "tutorial_repo" {
  description = "Git repository cloned into the research container's workspace. Empty: none."
  type        = string
  default     = ""
}

variable "startup_script" {
  description = "Shell script run in the research container after the clone. Empty: none."
  type        = string
  default     = ""
}

variable "client_image_compat" {
  description = "\"LabLink client image\" compatibility: run container_image as an original LabLink client (its own token as API_TOKEN) instead of the LabLink agent."
  type        = bool
  default     = false
}

variable "subject_software" {
  description = "SUBJECT_SOFTWARE for original LabLink client images (e.g. sleap). Empty: none."
  type        = string
  default     = ""
}

variable "startup_on_error" {
  description = "If the startup script fails: \"continue\" (log it and start anyway) or \"fail\" (stop the container)."
  type        = string
  default     = "continue"

  validation {
    condition     = contains(["continue", "fail"], var.startup_on_error)
    error_message = "startup_on_error must be \"continue\" or \"fail\"."
  }
}

variable "research_user" {
  description = "Unix account researchers use on the VM: the agent installs their SSH keys there (the Deep Learning AMI's is ubuntu)."
  type        = string
  default     = "ubuntu"

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_-]{0,31}$", var.research_user))
    error_message = "research_user must be a Unix login name such as ubuntu."
  }
}

variable "server_url" {
  description = "URL the agents reach the LabLink server at (https://…)."
  type        = string
}

variable "tags" {
  description = "Extra tags for every resource. The lablink: prefix is reserved."
  type        = map(string)
  default     = {}
}
