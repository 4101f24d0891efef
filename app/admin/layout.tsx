import { AdminNav } from "./admin-nav";
import { isAdminNow } from "./admin-only";

export default async function AdminLayout({ children }: { children: React.ReactNode }) {
  const admin = await isAdminNow();
  return (
    <div className="space-y-6">
      {admin && <AdminNav />}
      {children}
    </div>
  );
}
