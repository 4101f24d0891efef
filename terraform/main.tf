data "aws_ami" "deep_learning" {
  count       = var.ami_id == null ? 1 : 0
  most_recent = true
  owners      = ["amazon"]

  filter {
    name   = "name"
    values = ["Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) *"]
  }

  filter {
    name   = "architecture"
    values = ["x86_64"]
  }
}

locals {
  ami_id = var.ami_id != null ? var.ami_id : data.aws_ami.deep_learning[0].id
}

resource "aws_security_group" "vm" {
  name_prefix = "lablink-${var.fleet_name}-"
  description = "LabLink fleet ${var.fleet_name}: egress, and SSH only from configured ranges"
  vpc_id      = var.vpc_id

  tags = {
    Name = "lablink-${var.fleet_name}"
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_egress_rule" "all" {
  security_group_id = aws_security_group.vm.id
  description       = "Agents reach the server; VMs pull images and packages"
  ip_protocol       = "-1"
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_ingress_rule" "ssh" {
  for_each = toset(var.allowed_ssh_cidrs)

  security_group_id = aws_security_group.vm.id
  description       = "SSH from ${each.value}"
  ip_protocol       = "tcp"
  from_port         = 22
  to_port           = 22
  cidr_ipv4         = each.value
}

resource "aws_instance" "vm" {
  for_each = var.vm_ids

  ami                    = local.ami_id
  instance_type          = var.instance_type
  subnet_id              = var.subnet_id
  vpc_security_group_ids = [aws_security_group.vm.id]
  key_name               = var.key_name

  # IMDSv2 only, hop limit 1: the agent on the host can reach it, containers (one hop further,
  # behind Docker's bridge) cannot. The bootstrap also rejects their traffic to it.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  root_block_device {
    volume_type           = "gp3"
    volume_size           = var.root_volume_gb
    encrypted             = true
    delete_on_termination = true
  }

  # Gzipped and base64-encoded: the rendered script stays far below EC2's 16 KB limit.
  user_data_base64 = base64gzip(templatefile("${path.module}/user-data.sh.tftpl", {
    server_url_b64       = base64encode(var.server_url)
    vm_id                = each.value
    agent_token_b64      = base64encode(var.agent_tokens[each.key])
    agent_image_b64      = base64encode(var.agent_image)
    container_image_b64  = base64encode(var.container_image)
    tutorial_repo_b64    = base64encode(var.tutorial_repo)
    startup_script_b64   = base64encode(var.startup_script)
    startup_on_error     = var.startup_on_error
    research_user        = var.research_user
    vm_name              = each.key
    client_image_compat  = var.client_image_compat ? "true" : "false"
    subject_software_b64 = base64encode(var.subject_software)
  }))

  tags = {
    Name           = "${var.fleet_name}/${each.key}"
    "lablink:vm"   = each.value
    "lablink:name" = each.key
  }

  volume_tags = merge(var.tags, {
    "lablink:fleet" = var.fleet_name
    "lablink:vm"    = each.value
  })

  lifecycle {
    # A VM's token is handed over once, at creation; later applies pass none and must not
    # replace running instances. A newer default AMI applies to new VMs only.
    ignore_changes = [user_data_base64, ami]
  }
}
