output "vms" {
  description = "VM name => instance id, LabLink VM id, private and public IP. The LabLink runner reads this with `terraform output -json`."
  value       = {
    for name, instance in aws_instance.vm : name => {
      instance_id = instance.id
      vm_id       = var.vm_ids[name]
      private_ip  = instance.private_ip
      public_ip   = instance.public_ip
    }
  }
}

output "security_group_id" {
  description = "The fleet's security group."
  value       = aws_security_group.vm.id
}
